// The loaded-models table: one row per runner process, and the server's own row in the footer.

import { el, role } from "./dom.js";
import { bytes, pct } from "./format.js";

export function renderRunners(root, f) {
  const body = role(root, "runners");
  body.textContent = "";
  if (!f.runners.length) {
    body.append(el("tr", {}, [el("td", { colspan: "8", class: "empty", text: "No model is loaded. Models load on first use in the playground or the API." })]));
  }
  f.runners.forEach(function (r) {
    body.append(el("tr", {}, [
      el("td", { "data-label": "Model" }, [el("strong", { text: r.name })]),
      el("td", { "data-label": "State", text: r.state }),
      el("td", { "data-label": "PID", class: "num", text: String(r.pid) }),
      el("td", { "data-label": "CPU", class: "num", text: pct(r.cpu_percent) }),
      el("td", { "data-label": "RSS", class: "num", text: bytes(r.rss_bytes) }),
      el("td", { "data-label": "GPU memory", class: "num", text: r.gpu_mem_bytes === null ? "no GPU" : bytes(r.gpu_mem_bytes) }),
      el("td", { "data-label": "Threads", class: "num", text: String(r.threads) }),
      el("td", { "data-label": "Queue", class: "num", text: String(r.queue) }),
    ]));
  });
  const foot = role(root, "server");
  foot.textContent = "";
  if (f.server) {
    const s = f.server;
    foot.append(el("tr", { class: "server-row" }, [
      el("td", { "data-label": "Process", text: "OpsDash server" }), el("td", { "data-label": "State", text: "serving" }),
      el("td", { "data-label": "PID", class: "num", text: String(s.pid) }),
      el("td", { "data-label": "CPU", class: "num", text: pct(s.cpu_percent) }),
      el("td", { "data-label": "RSS", class: "num", text: bytes(s.rss_bytes) }),
      el("td", { "data-label": "GPU memory", class: "num", text: "—" }),
      el("td", { "data-label": "Threads", class: "num", text: String(s.threads) }),
      el("td", { "data-label": "Queue", class: "num", text: "—" }),
    ]));
  }
}
