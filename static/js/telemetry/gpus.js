// The GPU section: one card per GPU with meters and facts, or the named NVML state explained.

import { el, role, setText } from "./dom.js";
import { bytes, energy, num, pct, rate } from "./format.js";

function meter(label, value, max, text) {
  const ratio = max ? Math.max(0, Math.min(1, value / max)) : 0;
  const bar = el("span", { class: "meter-fill" });
  bar.style.width = (ratio * 100).toFixed(1) + "%";
  bar.dataset.level = ratio >= 0.9 ? "high" : ratio >= 0.7 ? "mid" : "low";
  return el("div", { class: "meter" }, [
    el("span", { class: "meter-label", text: label }), el("span", { class: "meter-value", text: text }),
    el("span", { class: "meter-track" }, [bar]),
  ]);
}

/** The indexes of the GPUs a frame reports readings for (none unless NVML is "ok"). */
export function gpuIndexesOf(f) {
  return f.gpu_state === "ok" ? f.gpus.map(function (g) { return g.index; }) : [];
}

export function renderGpus(root, f) {
  const ok = f.gpu_state === "ok";
  setText(root, "gpu-state", ok ? f.gpus.length + " GPU" + (f.gpus.length === 1 ? "" : "s") : "state: " + f.gpu_state);
  role(root, "gpu-explanation").classList.toggle("hidden", ok);
  role(root, "gpu-charts").classList.toggle("hidden", !ok);
  if (!ok) setText(root, "gpu-detail", f.gpu_detail);
  const box = role(root, "gpus");
  box.textContent = "";
  (ok ? f.gpus : []).forEach(function (g) {
    const facts = [
      ["Temperature", num(g.temp, " °C")], ["SM clock", num(g.sm_clock, " MHz")],
      ["Memory clock", num(g.mem_clock, " MHz")], ["Fan", g.fan === null ? "passive" : pct(g.fan)],
      ["Energy", energy(g.energy)], ["PCIe", g.pcie_rx === null ? "—" : "↓ " + rate(g.pcie_rx) + " ↑ " + rate(g.pcie_tx)],
    ];
    box.append(el("article", { class: "card gpu-card", "data-testid": "gpu-card" }, [
      el("header", {}, [el("strong", { text: "GPU " + g.index }), el("span", { class: "muted", text: g.name || "" })]),
      meter("Utilization", g.util, 100, pct(g.util)),
      meter("Memory", g.mem_used, g.mem_total, bytes(g.mem_used) + " / " + bytes(g.mem_total)),
      meter("Power", g.power, g.power_limit, num(g.power, " W", 0) + (g.power_limit ? " / " + num(g.power_limit, " W", 0) : "")),
      el("dl", { class: "gpu-facts" }, facts.map(function (p) { return el("div", {}, [el("dt", { text: p[0] }), el("dd", { text: p[1] })]); })),
    ]));
  });
}
