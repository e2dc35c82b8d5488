// An output panel's stats line and error line, shared by the prompt and compare pages.

function fmt(v, digits, unit) {
  if (v === null || v === undefined) return "—";
  return Number(v).toFixed(digits) + (unit || "");
}

// What the server's status messages say before the first token (opsdash.playground.consumers).
const PHASE_TEXT = { loading: "loading model", running: "running" };

/** Live figures while streaming; the server's exact ones when the run is done. */
export function createStats(root) {
  const el = function (name) { return root.querySelector('[data-stat="' + name + '"]'); };
  let start = 0, first = 0, chunks = 0;
  function blank() {
    ["ttft", "tps", "prompt", "completion", "status"].forEach(function (n) { el(n).textContent = "—"; });
  }
  return {
    begin: function () {
      start = performance.now(); first = 0; chunks = 0;
      blank();
      el("status").textContent = "running";
    },
    // Before the first token: "loading model" (a first run loads it for seconds), "running".
    phase: function (state) { el("status").textContent = PHASE_TEXT[state] || state; },
    // "New conversation": nothing of the previous run stays on the panel.
    reset: function () { start = 0; first = 0; chunks = 0; blank(); },
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

export function showError(panel, text) {
  const box = panel.querySelector('[data-role="error"]');
  box.textContent = text || "";
  box.classList.toggle("hidden", !text);
}

// The page's connection line, from the socket's state.
const STATE_TEXT = { connecting: "connecting…", connected: "connected", reconnecting: "reconnecting…", closed: "not allowed" };

export function showConnection(node) {
  return function (state) { node.textContent = STATE_TEXT[state]; };
}
