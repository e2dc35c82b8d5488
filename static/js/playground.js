// Playground and compare pages: one reconnecting websocket, token streaming, stop.
(function () {
  "use strict";

  // A websocket that reconnects with backoff and reports its state.
  function connect(path, onMessage, onState) {
    let socket = null;
    let delay = 500;
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
    function open() {
      onState("connecting…");
      socket = new WebSocket(url);
      socket.addEventListener("open", function () { delay = 500; onState("connected"); });
      socket.addEventListener("message", function (e) { onMessage(JSON.parse(e.data)); });
      socket.addEventListener("close", function (e) {
        if (e.code === 4403) { onState("not allowed"); return; }
        onState("reconnecting…");
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 10000);
      });
    }
    open();
    return {
      send: function (msg) {
        if (!socket || socket.readyState !== WebSocket.OPEN) return false;
        socket.send(JSON.stringify(msg));
        return true;
      },
    };
  }

  // The generation parameters come from the page (opsdash.runs.params via json_script):
  // their names, types and ranges are written once, on the server.
  function paramDefinition() {
    const block = document.getElementById("param-definition");
    return block ? JSON.parse(block.textContent) : [];
  }

  // The browser checks min/max/step itself; an exclusive minimum (top_p 0) it cannot express.
  function guardParams(form) {
    paramDefinition().forEach(function (p) {
      const input = form.elements[p.name];
      if (!input || !p.exclusive_minimum) return;
      input.addEventListener("input", function () {
        const v = input.value.trim();
        input.setCustomValidity(v !== "" && parseFloat(v) <= p.minimum
          ? p.name + " must be " + p.help + "." : "");
      });
    });
  }

  function params(form) {
    const out = {};
    paramDefinition().forEach(function (p) {
      const input = form.elements[p.name];
      if (!input) return;
      const v = input.value.trim();
      if (v === "") return;
      if (p.type === "stops") {
        out[p.name] = input.value.split(",").map(function (s) { return s.replace(/\\n/g, "\n"); }).filter(Boolean);
      } else {
        out[p.name] = p.type === "int" ? parseInt(v, 10) : parseFloat(v);
      }
    });
    return out;
  }

  function fmt(v, digits, unit) {
    if (v === null || v === undefined) return "—";
    return Number(v).toFixed(digits) + (unit || "");
  }

  // Live figures while streaming; exact ones from the server when the run is done.
  function Stats(root) {
    const el = function (name) { return root.querySelector('[data-stat="' + name + '"]'); };
    let start = 0, first = 0, chunks = 0;
    return {
      begin: function () {
        start = performance.now(); first = 0; chunks = 0;
        ["ttft", "tps", "prompt", "completion"].forEach(function (n) { el(n).textContent = "—"; });
        el("status").textContent = "running";
      },
      token: function () {
        const now = performance.now();
        chunks += 1;
        if (!first) { first = now; el("ttft").textContent = fmt(now - start, 0, " ms"); }
        if (chunks > 1) el("tps").textContent = "≈" + fmt((chunks - 1) / ((now - first) / 1000), 1);
        el("completion").textContent = "≈" + chunks;
      },
      done: function (run) {
        el("ttft").textContent = fmt(run.timings.ttft_ms, 0, " ms");
        el("tps").textContent = fmt(run.timings.tokens_per_second, 1);
        el("prompt").textContent = run.usage.prompt_tokens ?? "—";
        el("completion").textContent = run.usage.completion_tokens ?? "—";
        el("status").textContent = run.status;
      },
      status: function (text) { el("status").textContent = text; },
    };
  }

  function showError(panelEl, text) {
    const box = panelEl.querySelector('[data-role="error"]');
    box.textContent = text || "";
    box.classList.toggle("hidden", !text);
  }

  // ------------------------------------------------------------------ single prompt / chat
  const playground = document.getElementById("playground");
  if (playground) {
    const form = document.getElementById("run-form");
    guardParams(form);
    const panel = playground.querySelector('[data-panel="main"]');
    const transcript = panel.querySelector('[data-role="transcript"]');
    const stats = Stats(panel);
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

    function setRunning(running) {
      runButton.disabled = running;
      stopButton.disabled = !running;
    }

    const ws = connect(playground.dataset.ws, function (msg) {
      if (msg.panel && msg.panel !== "main") return;
      if (msg.type === "started") {
        bubble = addMessage("assistant", "");
        bubble.classList.add("streaming");
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
    }, function (state) { conn.textContent = state; });

    form.addEventListener("submit", function (e) {
      e.preventDefault();
      const text = form.elements.prompt.value;
      showError(panel, "");
      const msg = { type: "run", panel: "main", model: form.elements.model.value,
                    workflow: form.elements.workflow.value, params: params(form) };
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
    form.querySelector('[data-role="clear"]').addEventListener("click", function () {
      history = []; transcript.innerHTML = ""; showError(panel, "");
    });
    form.elements.prompt.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit();
    });

    if (playground.dataset.rerun) {
      const r = JSON.parse(playground.dataset.rerun);
      form.elements.model.value = r.model;
      form.elements.workflow.value = r.workflow;
      Object.keys(r.params || {}).forEach(function (k) {
        const field = form.elements[k];
        if (!field || r.params[k] === null) return;
        field.value = Array.isArray(r.params[k]) ? r.params[k].join(",") : r.params[k];
      });
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

  // ------------------------------------------------------------------ compare
  const compare = document.getElementById("compare");
  if (compare) {
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

    const ws = connect(compare.dataset.ws, function (msg) {
      const p = panels[msg.panel];
      if (!p) return;
      if (msg.type === "token") { p.text.textContent += msg.text; p.stats.token(); }
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
    }, function (state) { conn.textContent = state; });

    form.addEventListener("submit", function (e) {
      e.preventDefault();
      const picks = Array.from(form.querySelectorAll('input[name="models"]:checked'));
      if (picks.length < 2 || picks.length > 4) { conn.textContent = "Pick 2 to 4 models."; return; }
      const prompt = form.elements.prompt.value;
      const p = params(form);
      const group = crypto.randomUUID ? crypto.randomUUID() : String(Date.now());
      grid.innerHTML = "";
      grid.dataset.count = picks.length;
      panels = {};
      picks.forEach(function (pick, i) {
        const el = template.content.firstElementChild.cloneNode(true);
        el.querySelector('[data-role="title"]').textContent = pick.dataset.name;
        grid.appendChild(el);
        const key = "p" + i;
        panels[key] = { el: el, text: el.querySelector('[data-role="text"]'), stats: Stats(el) };
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
})();
