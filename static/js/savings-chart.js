// The savings chart's choices, apart from drawing them (tests/savings/test_chart.py runs these in
// Chromium): money ticks with "$", one label per few days ending on the last day ("Today" when
// it is today), and point markers only where there is no line to draw.
export const NANO = 1e9;
const MINUS = "\u2212";
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

// The fewest decimals (up to `most`) that write every value exactly enough to tell them apart.
function decimalsFor(values, most) {
  for (let digits = 0; digits < most; digits++) {
    const scale = Math.pow(10, digits);
    if (values.every(function (v) { return Math.abs(Math.round(v * scale) - v * scale) < 1e-6 * scale; })) {
      return digits;
    }
  }
  return most;
}

// Axis ticks as short money: $0, $250, $1.2k, $3.45M, −$20, $0.005.
export function moneyTicks(ticks) {
  const top = Math.max.apply(null, ticks.map(Math.abs).concat([0]));
  const unit = top >= 1e6 ? [1e6, "M"] : top >= 1e3 ? [1e3, "k"] : [1, ""];
  const scaled = ticks.map(function (v) { return v / unit[0]; });
  const digits = decimalsFor(scaled, unit[0] === 1 ? 6 : 2);
  return scaled.map(function (v) {
    if (v === 0) return "$0";
    const text = Math.abs(v).toFixed(digits);
    return (v < 0 && Number(text) !== 0 ? MINUS : "") + "$" + text + unit[1];
  });
}

// Exact enough for a tooltip: $1,234.57, $0.0042.
export function money(v) {
  if (v == null) return "—";
  const abs = Math.abs(v);
  const text = abs >= 1
    ? abs.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })
    : abs === 0 ? "0.00" : abs.toPrecision(3);
  return (v < 0 ? MINUS + "$" : "$") + text;
}

// The x positions of the labels: every `step` days counted back from the last day, so the last
// day (today, for a preset range) always has one; at most one label per `minPx` pixels.
export function daySplits(days, width, minPx) {
  const n = days.length;
  if (!n) return [];
  const fit = Math.max(1, Math.floor(width / (minPx || 72)));
  const step = Math.max(1, Math.ceil(n / fit));
  const out = [];
  for (let i = n - 1; i >= 0; i -= step) out.unshift(days[i]);
  return out;
}

// "Today" for today, else "3 Dec" (with the year on a 1 January, so a year's range reads).
export function dayLabel(seconds, today) {
  const d = new Date(seconds * 1000);
  const iso = d.toISOString().slice(0, 10);
  if (iso === today) return "Today";
  const label = d.getUTCDate() + " " + MONTHS[d.getUTCMonth()];
  return d.getUTCMonth() === 0 && d.getUTCDate() === 1 ? label + " " + d.getUTCFullYear() : label;
}

// Point markers only for a single day (no line to draw), and then of different sizes, the
// avoided one hollow: two equal markers a few pixels apart read as an "8".
// `hollow` is the inside of the hollow marker: the chart's background (white by default).
export function pointStyle(seriesIndex, count, hollow) {
  const sizes = [0, 11, 5, 7];
  return {
    show: count <= 1,
    size: sizes[seriesIndex] || 6,
    fill: seriesIndex === 1 ? hollow || "#fff" : undefined,
  };
}

export function seconds(isoDays) {
  return isoDays.map(function (d) { return Date.parse(d + "T00:00:00Z") / 1000; });
}

export function dollars(list) {
  return list.map(function (n) { return n / NANO; });
}

// The y range: the data's, padded, always with 0 in it (never an invented $0–$100).
export function yRange(lists) {
  let low = 0;
  let high = 0;
  lists.forEach(function (list) {
    list.forEach(function (v) {
      if (v < low) low = v;
      if (v > high) high = v;
    });
  });
  if (low === high) return [0, 1];
  const pad = (high - low) * 0.08;
  return [low < 0 ? low - pad : 0, high > 0 ? high + pad : 0];
}
