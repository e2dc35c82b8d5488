// The telemetry page: the history sent on connect, then one frame a second per node over
// /ws/telemetry/ (each message acknowledged: the server sends the next only then; the frames
// of several nodes that waited for the ack come together as {"type": "frames"}), rendered at most
// once per animation frame from the newest frames only. Every node is a card of the grid; the
// focused node (data-focus: ?host= or the first) is shown in full below it.

import { openSocket } from "../lib/socket.js";
import { renderAlerts } from "./alerts.js";
import { createCharts } from "./charts.js";
import { renderCores } from "./cores.js";
import { role } from "./dom.js";
import { gpuIndexesOf, renderGpus } from "./gpus.js";
import { createNodeGrid } from "./nodes.js";
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
  const focus = root.dataset.focus || null;
  const grid = createNodeGrid(root, focus, Number(root.dataset.unhealthySeconds || 15));
  const changed = new Set();
  let host = focus;
  let latest = null;
  let scheduled = false;
  let detail = false; // the focused node has news: redraw the full view too

  function schedule() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(function () {
      scheduled = false;
      grid.render(changed);
      changed.clear();
      // Every node's ongoing alerts (on a hub each sentence names its node).
      renderAlerts(root, { alerts: grid.alerts() });
      if (!detail) return;
      detail = false;
      if (latest) {
        renderTiles(root, latest);
        renderCores(root, latest);
        renderGpus(root, latest);
        charts.setGpus(gpuIndexesOf(latest));
        renderRunners(root, latest);
      }
      // The history alone already fills the charts, before the first live frame.
      const seconds = picker.liveSeconds();
      if (seconds) charts.drawLive(seconds);
    });
  }

  function onMessage(message) {
    if (message.type === "history") {
      if (message.host) grid.history(message.host, message.frames || []);
      if (host && message.host && message.host !== host) { schedule(); return; }
      detail = true;
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
      onFrame(message);
    } else if (message.type === "frames") {
      // Every node's frame that waited for the last ack, in one message.
      (message.frames || []).forEach(onFrame);
    }
    schedule();
  }

  function onFrame(frame) {
    grid.frame(frame);
    changed.add(frame.host);
    if (!host) host = frame.host;
    if (frame.host !== host) return; // another node (sent as its card): its card only
    pushLive(frame);
    latest = frame;
    detail = true;
  }

  function onState(state, detail) {
    if (state === "connecting") renderConnection(root, "connecting", "connecting…");
    else if (state === "connected") renderConnection(root, "live", "live");
    else if (state === "reconnecting") renderConnection(root, "reconnecting", "reconnecting in " + Math.ceil(detail / 1000) + " s…");
    else renderConnection(root, "closed", "not allowed: sign in again");
  }

  const path = root.dataset.ws + (focus ? "?focus=" + encodeURIComponent(focus) : "");
  openSocket(path, { onMessage: onMessage, onState: onState, ack: ACK, silenceMs: SILENCE_MS, maxDelayMs: 15000 });
}
