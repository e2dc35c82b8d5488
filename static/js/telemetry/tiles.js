// The four "now" tiles (CPU, memory, disk, network) and the page head's host and time.

import { role, setText } from "./dom.js";
import { bytes, clock, pct, rate } from "./format.js";

export function renderTiles(root, f) {
  const m = f.memory;
  setText(root, "host", f.host);
  setText(root, "cpu-total", pct(f.cpu.total, 1));
  setText(root, "cpu-sub", "load " + f.cpu.load.map(function (v) { return v.toFixed(2); }).join(" · ") +
    (f.cpu.freq_mhz ? " · " + (f.cpu.freq_mhz / 1000).toFixed(2) + " GHz" : ""));
  setText(root, "mem-percent", pct(m.total_bytes ? (100 * m.used_bytes) / m.total_bytes : 0, 1));
  setText(root, "mem-sub", bytes(m.used_bytes) + " of " + bytes(m.total_bytes) +
    (m.swap_total_bytes ? " · swap " + bytes(m.swap_used_bytes) + " of " + bytes(m.swap_total_bytes) : " · no swap"));
  setText(root, "disk-rate", rate(f.disk.read_bytes_s + f.disk.write_bytes_s));
  setText(root, "disk-sub", "read " + rate(f.disk.read_bytes_s) + " · write " + rate(f.disk.write_bytes_s) +
    (f.disk.models_free_bytes !== null ? " · models disk " + bytes(f.disk.models_free_bytes) + " free" : ""));
  setText(root, "net-rate", rate(f.net.rx_bytes_s + f.net.tx_bytes_s));
  setText(root, "net-sub", "↓ " + rate(f.net.rx_bytes_s) + " · ↑ " + rate(f.net.tx_bytes_s));
  setText(root, "updated", "updated " + clock(f.t));
}

// The connection's state beside the host: "live", or what the page is doing about it.
export function renderConnection(root, state, text) {
  const node = role(root, "conn");
  node.dataset.state = state;
  node.textContent = text;
}
