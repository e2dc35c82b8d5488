// The range picker: 5 and 15 minutes draw from the live frames; longer ranges ask
// /api/telemetry/history (per-minute rows) and ask again every minute.

import { setText } from "./dom.js";

const LIVE_RANGES = { "5m": 300, "15m": 900 };
const HISTORY_REFRESH_MS = 60000;

/** Wires the `[data-range]` buttons; answers the live window in seconds (null: a history range). */
export function createRangePicker(root, charts) {
  let range = "5m";
  let historyTimer = null;

  function loadHistory() {
    const url = root.dataset.historyUrl + "?range=" + encodeURIComponent(range) +
      (root.dataset.focus ? "&host=" + encodeURIComponent(root.dataset.focus) : "");
    const asked = range;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status + " " + r.statusText); return r.json(); })
      .then(function (answer) { if (asked === range) charts.drawHistory(answer); })
      .catch(function (e) { setText(root, "updated", "history unavailable: " + e.message); });
  }

  root.querySelectorAll("[data-range]").forEach(function (button) {
    button.addEventListener("click", function () {
      range = button.dataset.range;
      root.querySelectorAll("[data-range]").forEach(function (b) { b.setAttribute("aria-checked", String(b === button)); });
      clearInterval(historyTimer);
      if (LIVE_RANGES[range]) {
        charts.drawLive(LIVE_RANGES[range]);
      } else {
        loadHistory();
        historyTimer = setInterval(loadHistory, HISTORY_REFRESH_MS);
      }
    });
  });

  return { liveSeconds: function () { return LIVE_RANGES[range] || null; } };
}
