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

const REASONS = {
  gpu_idle: "idle", applications_clocks: "app clocks", sw_power_cap: "power cap", hw_slowdown: "HW slowdown",
  sync_boost: "sync boost", sw_thermal: "SW thermal", hw_thermal: "HW thermal", hw_power_brake: "power brake",
  display_clocks: "display clocks",
};

function seconds(s) { return s >= 3600 ? (s / 3600).toFixed(1) + " h" : s >= 60 ? Math.round(s / 60) + " min" : Math.round(s) + " s"; }

/** The health facts of one GPU (probes/gpu_health.py says each field's shape): [label, text, trouble]. */
function healthFacts(g) {
  const out = [];
  out.push(["Thermal margin", g.margin === null || g.margin === undefined ? "—" : g.margin + " °C" + (g.slowdown ? " (slows at " + g.slowdown + ")" : ""), g.margin !== null && g.margin !== undefined && g.margin < 5]);
  const active = g.throttle ? Object.keys(g.throttle).filter(function (r) { return r !== "gpu_idle"; }) : null;
  out.push(["Throttle", active === null ? "—" : active.length ? active.map(function (r) { return (REASONS[r] || r) + " " + seconds(g.throttle[r]); }).join(", ") : "none", !!(active && active.length)]);
  const ecc = g.ecc;
  out.push(["ECC uncorrected", !ecc ? "—" : num(ecc[1]) + " now · " + num(ecc[3]) + " ever", !!(ecc && ecc[1])]);
  const xid = g.xid;
  out.push(["XID (10 min)", !xid ? "—" : xid.length ? xid.map(function (x) { return x[0]; }).join(", ") : "none", !!(xid && xid.length)]);
  const remap = g.remap, retired = g.retired;
  let memory = "—", bad = false;
  if (remap) { bad = !!(remap[2] || remap[3]); memory = remap[3] ? "remap failed" : remap[2] ? "remap pending" : remap[0] + remap[1] + " rows remapped"; }
  else if (retired) { bad = !!retired[2]; memory = retired[2] ? "retirement pending" : (retired[0] || 0) + (retired[1] || 0) + " pages retired"; }
  out.push(["Memory repair", memory, bad]);
  const viol = g.viol;
  out.push(["Held down", !viol ? "—" : "power " + seconds(viol[0] || 0) + " · heat " + seconds(viol[1] || 0), false]);
  return out;
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
    ].concat(healthFacts(g));
    box.append(el("article", { class: "card gpu-card", "data-testid": "gpu-card" }, [
      el("header", {}, [el("strong", { text: "GPU " + g.index }), el("span", { class: "muted", text: g.name || "" })]),
      meter("Utilization", g.util, 100, pct(g.util)),
      meter("Memory", g.mem_used, g.mem_total, bytes(g.mem_used) + " / " + bytes(g.mem_total)),
      meter("Power", g.power, g.power_limit, num(g.power, " W", 0) + (g.power_limit ? " / " + num(g.power_limit, " W", 0) : "")),
      el("dl", { class: "gpu-facts" }, facts.map(function (p) {
        return el("div", p[2] ? { class: "trouble" } : {}, [el("dt", { text: p[0] }), el("dd", { text: p[1] })]);
      })),
    ]));
  });
}
