// The compare page: one prompt to 2–4 models at once, each answer streamed into its own panel.

import { openSocket } from "../lib/socket.js";
import { createStats, showConnection, showError } from "./panel.js";
import { guardParams, readParams } from "./params.js";

export function startCompare(compare) {
  const form = document.getElementById("compare-form");
  guardParams(form);
  const grid = compare.querySelector('[data-role="panels"]');
  const template = document.getElementById("panel-template");
  const runButton = form.querySelector('[data-role="run"]');
  const stopButton = form.querySelector('[data-role="stop"]');
  const conn = form.querySelector('[data-role="conn"]');
  let panels = {};
  let running = 0;

  function setRunning(n) {
    running = n;
    runButton.disabled = n > 0;
    stopButton.disabled = n === 0;
  }

  function onMessage(msg) {
    const p = panels[msg.panel];
    if (!p) return;
    if (msg.type === "status") p.stats.phase(msg.state);
    else if (msg.type === "token") { p.text.textContent += msg.text; p.stats.token(); }
    else if (msg.type === "done") {
      p.stats.done(msg);
      p.text.classList.remove("streaming");
      if (msg.status === "error") showError(p.el, msg.error);
      setRunning(running - 1);
    } else if (msg.type === "error") {
      showError(p.el, msg.reason);
      p.stats.status("refused");
      setRunning(running - 1);
    }
  }

  const ws = openSocket(compare.dataset.ws, { onMessage: onMessage, onState: showConnection(conn), maxDelayMs: 10000 });

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    const picks = Array.from(form.querySelectorAll('input[name="models"]:checked'));
    if (picks.length < 2 || picks.length > 4) { conn.textContent = "Pick 2 to 4 models."; return; }
    const prompt = form.elements.prompt.value;
    const p = readParams(form);
    const group = crypto.randomUUID ? crypto.randomUUID() : String(Date.now());
    grid.innerHTML = "";
    grid.dataset.count = picks.length;
    panels = {};
    picks.forEach(function (pick, i) {
      const el = template.content.firstElementChild.cloneNode(true);
      el.querySelector('[data-role="title"]').textContent = pick.dataset.name;
      grid.appendChild(el);
      const key = "p" + i;
      panels[key] = { el: el, text: el.querySelector('[data-role="text"]'), stats: createStats(el) };
      panels[key].text.classList.add("streaming");
      panels[key].stats.begin();
      const msg = { type: "run", panel: key, model: pick.value, params: p, group: group };
      if (form.elements.chat.checked) msg.messages = [{ role: "user", content: prompt }];
      else msg.prompt = prompt;
      ws.send(msg);
    });
    setRunning(picks.length);
  });
  stopButton.addEventListener("click", function () {
    Object.keys(panels).forEach(function (key) { ws.send({ type: "stop", panel: key }); });
  });
}
