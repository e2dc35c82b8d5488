// The per-core CPU strip: one cell per logical core, filled to its use.

import { el, role, setText } from "./dom.js";

export function renderCores(root, f) {
  const strip = role(root, "cores");
  const cores = f.cpu.percent;
  if (strip.children.length !== cores.length) {
    strip.textContent = "";
    cores.forEach(function (_, i) {
      strip.append(el("div", { class: "core" }, [el("span", { class: "core-fill" }), el("span", { class: "core-label", text: String(i) })]));
    });
  }
  cores.forEach(function (p, i) {
    const cell = strip.children[i];
    cell.firstChild.style.height = Math.min(100, p) + "%";
    cell.title = "core " + i + ": " + p + "%";
    cell.dataset.level = p >= 90 ? "high" : p >= 60 ? "mid" : "low";
  });
  setText(root, "cores-sub", cores.length + " logical cores" + (f.cpu.freq_mhz ? " · " + f.cpu.freq_mhz + " MHz" : ""));
}
