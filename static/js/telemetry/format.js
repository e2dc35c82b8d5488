// How the telemetry page writes its figures: "—" for a figure the host does not report.

export function bytes(v, digits) {
  if (v === null || v === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  let n = Math.abs(v);
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  const d = digits === undefined ? (i === 0 ? 0 : n < 10 ? 1 : 0) : digits;
  return (v < 0 ? "-" : "") + n.toFixed(d) + " " + units[i];
}
export function rate(v) { return v === null || v === undefined ? "—" : bytes(v) + "/s"; }
export function pct(v, d) { return v === null || v === undefined ? "—" : Number(v).toFixed(d || 0) + "%"; }
export function num(v, unit, d) { return v === null || v === undefined ? "—" : Number(v).toFixed(d || 0) + (unit || ""); }
export function energy(j) {
  if (j === null || j === undefined) return "—";
  return j >= 3.6e6 ? (j / 3.6e6).toFixed(2) + " kWh" : j >= 1000 ? (j / 1000).toFixed(1) + " kJ" : j + " J";
}
export function clock(ms) { return new Date(ms).toLocaleTimeString([], { hour12: false }); }
