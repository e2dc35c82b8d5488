// The telemetry page: the history sent on connect, then one frame a second over
// /ws/telemetry/ (each acknowledged: the server sends the next only then), rendered at most
// once per animation frame from the newest frame only.

import { openSocket } from "../lib/socket.js";
import { renderAlerts } from "./alerts.js";
import { createCharts } from "./charts.js";
import { renderCores } from "./cores.js";
import { role } from "./dom.js";
import { gpuIndexesOf, renderGpus } from "./gpus.js";
import { createRangePicker } from "./range.js";
import { pushLive, resetLive } from "./series.js";
import { renderRunners } from "./tables.js";
import { renderConnection, renderTiles } from "./tiles.js";

const SILENCE_MS = 15000; // the server sends every second: this long without a word, the link is dead
const ACK = '{"type":"ack"}';

const root = document.getElementById("telemetry");
if (root) start(root);

function start(root) {
  const charts = createCharts(root);
  const picker = createRangePicker(root, charts);
  let host = null;
  let latest = null;
  let scheduled = false;

  function schedule() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(function () {
      scheduled = false;
      if (latest) {
        renderTiles(root, latest);
        renderCores(root, latest);
        renderGpus(root, latest);
        charts.setGpus(gpuIndexesOf(latest));
        renderRunners(root, latest);
        renderAlerts(root, latest);
      }
      // The history alone already fills the charts, before the first live frame.
      const seconds = picker.liveSeconds();
      if (seconds) charts.drawLive(seconds);
    });
  }

  function onMessage(message) {
    if (message.type === "history") {
      if (host && message.host && message.host !== host) return;
      resetLive();
      const frames = message.frames || [];
      frames.forEach(pushLive);
      const last = frames[frames.length - 1];
      if (last) {
        host = last.host;
        if (last.gpu_state === "ok" && !charts.hasGpus()) {
          charts.setGpus(gpuIndexesOf(last));
          role(root, "gpu-charts").classList.remove("hidden");
        }
      }
    } else if (message.type === "frame") {
      if (!host) host = message.host;
      if (message.host !== host) return; // another node's agent (scale-out): one host per page
      pushLive(message);
      latest = message;
    }
    schedule();
  }

  function onState(state, detail) {
    if (state === "connecting") renderConnection(root, "connecting", "connecting…");
    else if (state === "connected") renderConnection(root, "live", "live");
    else if (state === "reconnecting") renderConnection(root, "reconnecting", "reconnecting in " + Math.ceil(detail / 1000) + " s…");
    else renderConnection(root, "closed", "not allowed: sign in again");
  }

  openSocket(root.dataset.ws, { onMessage: onMessage, onState: onState, ack: ACK, silenceMs: SILENCE_MS, maxDelayMs: 15000 });
}
