// The last 15 minutes of frames, columnar (uPlot's shape): t in seconds, one array per series.

const LIVE_SECONDS = 15 * 60;

// The same names as opsdash/telemetry/frames.py series_of().
export function seriesOf(f) {
  const m = f.memory;
  const out = {
    cpu: f.cpu.total, load1: f.cpu.load[0], mem_used: m.used_bytes,
    mem_percent: m.total_bytes ? (100 * m.used_bytes) / m.total_bytes : 0,
    swap_used: m.swap_used_bytes, disk_read: f.disk.read_bytes_s, disk_write: f.disk.write_bytes_s,
    net_rx: f.net.rx_bytes_s, net_tx: f.net.tx_bytes_s,
  };
  if (f.disk.models_free_bytes !== null && f.disk.models_free_bytes !== undefined) out.models_free = f.disk.models_free_bytes;
  (f.gpus || []).forEach(function (g) {
    ["util", "mem_used", "temp", "power"].forEach(function (k) {
      if (g[k] !== null && g[k] !== undefined) out["gpu" + g.index + "_" + k] = g[k];
    });
  });
  return out;
}

export const live = { t: [], cols: {} };

export function pushLive(frame) {
  const s = seriesOf(frame);
  const t = frame.t / 1000;
  if (live.t.length && t <= live.t[live.t.length - 1]) return;
  const n = live.t.length;
  live.t.push(t);
  Object.keys(s).forEach(function (k) { if (!live.cols[k]) live.cols[k] = new Array(n).fill(null); });
  Object.keys(live.cols).forEach(function (k) { live.cols[k].push(s[k] === undefined ? null : s[k]); });
  let drop = 0;
  while (drop < live.t.length && live.t[drop] < t - LIVE_SECONDS) drop += 1;
  if (drop) {
    live.t.splice(0, drop);
    Object.values(live.cols).forEach(function (c) { c.splice(0, drop); });
  }
}

export function resetLive() { live.t = []; live.cols = {}; }
