// The playground page: one prompt or a chat, its answer streamed token by token, stop.

import { openSocket } from "../lib/socket.js";
import { createStats, showConnection, showError } from "./panel.js";
import { fillParams, guardParams, readParams } from "./params.js";

export function startPrompt(playground) {
  const form = document.getElementById("run-form");
  guardParams(form);
  const panel = playground.querySelector('[data-panel="main"]');
  const transcript = panel.querySelector('[data-role="transcript"]');
  const stats = createStats(panel);
  const runButton = form.querySelector('[data-role="run"]');
  const stopButton = form.querySelector('[data-role="stop"]');
  const conn = form.querySelector('[data-role="conn"]');
  let history = [];
  let bubble = null;
  let pendingUser = null;

  const mode = function () { return form.elements.mode.value; };
  function syncMode() {
    form.querySelectorAll('[data-mode="chat"]').forEach(function (el) {
      el.classList.toggle("hidden", mode() !== "chat");
    });
  }
  form.querySelectorAll('input[name="mode"]').forEach(function (r) { r.addEventListener("change", syncMode); });
  syncMode();

  function addMessage(role, text) {
    const wrap = document.createElement("div");
    wrap.className = "msg " + role;
    const b = document.createElement("div");
    b.className = "bubble";
    b.textContent = text;
    wrap.appendChild(b);
    transcript.appendChild(wrap);
    wrap.scrollIntoView({ block: "end" });
    return b;
  }

  const clearButton = form.querySelector('[data-role="clear"]');
  function setRunning(running) {
    runButton.disabled = running;
    stopButton.disabled = !running;
    clearButton.disabled = running;  // the answer still streaming belongs to this conversation
  }

  function onMessage(msg) {
    if (msg.panel && msg.panel !== "main") return;
    if (msg.type === "started") {
      bubble = addMessage("assistant", "");
      bubble.classList.add("streaming");
    } else if (msg.type === "status") {
      stats.phase(msg.state);
    } else if (msg.type === "token") {
      bubble.textContent += msg.text;
      stats.token();
    } else if (msg.type === "done") {
      setRunning(false);
      stats.done(msg);
      if (bubble) bubble.classList.remove("streaming");
      if (msg.status === "error") showError(panel, msg.error);
      if (mode() === "chat" && pendingUser && (msg.status === "ok" || msg.status === "cancelled")) {
        history.push(pendingUser, { role: "assistant", content: msg.text });
      }
      pendingUser = null;
    } else if (msg.type === "error") {
      setRunning(false);
      stats.status("refused");
      showError(panel, msg.reason);
      if (bubble === null && pendingUser) transcript.lastChild && transcript.lastChild.remove();
      pendingUser = null;
    }
  }

  const ws = openSocket(playground.dataset.ws, { onMessage: onMessage, onState: showConnection(conn), maxDelayMs: 10000 });

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    const text = form.elements.prompt.value;
    showError(panel, "");
    const msg = { type: "run", panel: "main", model: form.elements.model.value,
                  workflow: form.elements.workflow.value, params: readParams(form) };
    if (mode() === "chat") {
      const system = form.elements.system.value.trim();
      pendingUser = { role: "user", content: text };
      msg.messages = (system ? [{ role: "system", content: system }] : []).concat(history, [pendingUser]);
    } else {
      transcript.innerHTML = "";
      msg.prompt = text;
    }
    bubble = null;
    if (!ws.send(msg)) { showError(panel, "Not connected to the server yet; try again in a moment."); return; }
    if (mode() === "chat") addMessage("user", text);
    else addMessage("user", text).parentElement.classList.add("raw");
    stats.begin();
    setRunning(true);
    form.elements.prompt.value = "";
  });
  stopButton.addEventListener("click", function () { ws.send({ type: "stop", panel: "main" }); });
  clearButton.addEventListener("click", function () {
    history = []; transcript.innerHTML = ""; showError(panel, ""); stats.reset();
  });
  form.elements.prompt.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit();
  });

  // "Run again" from the history: the same model, workflow, params and prompt or conversation.
  if (playground.dataset.rerun) {
    const r = JSON.parse(playground.dataset.rerun);
    form.elements.model.value = r.model;
    form.elements.workflow.value = r.workflow;
    fillParams(form, r.params);
    if (r.messages) {
      const last = r.messages[r.messages.length - 1];
      const system = r.messages.find(function (m) { return m.role === "system"; });
      if (system) form.elements.system.value = system.content;
      history = r.messages.filter(function (m) { return m !== last && m.role !== "system"; });
      history.forEach(function (m) { addMessage(m.role, m.content); });
      form.elements.prompt.value = last.content;
    } else {
      form.querySelector('input[name="mode"][value="prompt"]').checked = true;
      syncMode();
      form.elements.prompt.value = r.prompt;
    }
  }
}
