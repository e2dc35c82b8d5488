// The page's uPlot charts: live ranges from the frames in memory, longer ones from the history
// API with min/max bands. uPlot is the vendored IIFE build, loaded by a classic script before
// the page's module (static/vendor/uplot), so it is read from window.

import { bytes, num, pct, rate } from "./format.js";
import { live } from "./series.js";

// Series and axis colours come from the page's CSS variables (static/css/opsdash.css), read when
// a chart is built, so the charts follow the light or dark theme; these are the fallbacks.
const COLORS = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626", "#4b5563"];
const AXIS_COLORS = { axis: "#5d6778", grid: "#eef1f5", tick: "#dfe3ea" };

function palette() {
  const style = getComputedStyle(document.documentElement);
  const read = function (name, fallback) {
    const value = style.getPropertyValue(name).trim();
    // Bands append an alpha byte: only a 6-digit hex colour can take one.
    return /^#[0-9a-f]{6}$/i.test(value) ? value : fallback;
  };
  return {
    series: COLORS.map(function (fallback, i) { return read("--chart-" + (i + 1), fallback); }),
    axis: read("--chart-axis", AXIS_COLORS.axis),
    grid: read("--chart-grid", AXIS_COLORS.grid),
    tick: read("--chart-tick", AXIS_COLORS.tick),
  };
}
const HEIGHT = 170;
const FORMAT = {
  cpu: function (v) { return pct(v, 1); }, memory: bytes, disk: rate, net: rate,
  gpu_util: function (v) { return pct(v); }, gpu_mem: bytes,
  gpu_temp: function (v) { return num(v, " °C"); }, gpu_power: function (v) { return num(v, " W", 1); },
};
const FIXED = { cpu: [0, 100], gpu_util: [0, 100] };
// Axis labels drop "/s" (the caption says "per second") so they fit beside a phone-wide chart.
const AXIS = {
  disk: bytes, net: bytes, cpu: function (v) { return v + "%"; }, gpu_util: function (v) { return v + "%"; },
  gpu_power: function (v) { return v + " W"; }, gpu_temp: function (v) { return v + " °C"; },
};

function chartWidth(node) { return Math.max(200, Math.floor(node.getBoundingClientRect().width)); }

// Away from the cursor the legend shows the newest values, not dashes.
function showLatest(u) {
  const t = u.data[0];
  if (t && t.length && (u.cursor.left === undefined || u.cursor.left < 0)) u.setLegend({ idx: t.length - 1 });
}

// What a chart shows, as data attributes too (the browser tests read them).
function mark(chart, t) {
  chart.node.dataset.points = String(t.length);
  chart.node.dataset.last = t.length ? String(t[t.length - 1]) : "";
  showLatest(chart.plot);
}

/** The charts of the `[data-chart]` nodes under root. */
export function createCharts(root) {
  const charts = {};
  let gpuIndexes = [];
  let windowSeconds = 300; // live ranges show a fixed window ending now; null: the data's span

  function lines(name) {
    const gpu = function (key) { return gpuIndexes.map(function (i) { return ["gpu" + i + "_" + key, "GPU " + i]; }); };
    switch (name) {
      case "cpu": return [["cpu", "CPU"]];
      case "memory": return [["mem_used", "used"], ["swap_used", "swap"]];
      case "disk": return [["disk_read", "read"], ["disk_write", "write"]];
      case "net": return [["net_rx", "received"], ["net_tx", "sent"]];
      case "gpu_util": return gpu("util");
      case "gpu_mem": return gpu("mem_used");
      case "gpu_temp": return gpu("temp");
      case "gpu_power": return gpu("power");
    }
    return [];
  }

  function buildChart(name, node, banded) {
    const fmt = FORMAT[name];
    const colors = palette();
    const defs = lines(name);
    const series = [{}];
    const bands = [];
    defs.forEach(function (def, i) {
      const color = colors.series[i % colors.series.length];
      series.push({ label: def[1], stroke: color, width: 1.6, points: { show: false },
        value: function (u, v) { return v === null || v === undefined ? "—" : fmt(v); } });
    });
    if (banded) {
      defs.forEach(function (def, i) {
        const color = colors.series[i % colors.series.length];
        series.push({ label: def[1] + " max", stroke: color + "33", width: 0.5, points: { show: false }, value: function (u, v) { return v === null ? "—" : fmt(v); } });
        series.push({ label: def[1] + " min", stroke: color + "33", width: 0.5, points: { show: false }, value: function (u, v) { return v === null ? "—" : fmt(v); } });
        const maxIdx = defs.length + 1 + 2 * i;
        bands.push({ series: [maxIdx, maxIdx + 1], fill: color + "1f" });
      });
    }
    const fixed = FIXED[name];
    const axis = AXIS[name] || fmt;
    // An idle disk or network still gets a readable axis (0 B … 1 KiB), not 0.5-byte ticks.
    const floor = fmt === bytes || fmt === rate || AXIS[name] === bytes ? 1024 : 1;
    const opts = {
      width: chartWidth(node), height: HEIGHT, series: series, bands: bands,
      legend: { live: true },
      cursor: { drag: { x: false, y: false }, points: { size: 5 } },
      scales: {
        x: { time: true, range: function (u, min, max) { return windowSeconds && max ? [max - windowSeconds, max] : [min, max]; } },
        y: { range: fixed ? function () { return fixed; } : function (u, min, max) { return [0, Math.max(max * 1.15, floor)]; } },
      },
      axes: [
        { stroke: colors.axis, grid: { stroke: colors.grid }, ticks: { stroke: colors.tick } },
        { stroke: colors.axis, grid: { stroke: colors.grid }, ticks: { stroke: colors.tick }, size: 70,
          values: function (u, ticks) { return ticks.map(function (v) { return axis(v); }); } },
      ],
      hooks: {
        setCursor: [function (u) { if (u.cursor.idx === null || u.cursor.idx === undefined) showLatest(u); }],
      },
    };
    node.textContent = "";
    const empty = [[]].concat(series.slice(1).map(function () { return []; }));
    return { plot: new window.uPlot(opts, empty, node), names: defs.map(function (d) { return d[0]; }), node: node };
  }

  function ensureCharts(banded) {
    root.querySelectorAll("[data-chart]").forEach(function (node) {
      const name = node.dataset.chart;
      if (name.startsWith("gpu") && !gpuIndexes.length) return;
      const chart = charts[name];
      const key = banded + ":" + gpuIndexes.join(",");
      if (chart && chart.key === key) return;
      if (chart) chart.plot.destroy();
      charts[name] = buildChart(name, node, banded);
      charts[name].key = key;
    });
  }

  // Another theme: the same data redrawn in its colours (a canvas keeps the old ones).
  document.addEventListener("opsdash:theme", function () {
    Object.keys(charts).forEach(function (name) {
      const old = charts[name];
      const data = old.plot.data;
      old.plot.destroy();
      const chart = buildChart(name, old.node, old.key.startsWith("true"));
      chart.key = old.key;
      chart.plot.setData(data);
      mark(chart, data[0] || []);
      charts[name] = chart;
    });
  });

  let resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      Object.values(charts).forEach(function (c) { c.plot.setSize({ width: chartWidth(c.node), height: HEIGHT }); });
    }, 100);
  });

  return {
    hasGpus: function () { return gpuIndexes.length > 0; },

    // The GPUs the frames report; their charts are rebuilt when the set changes.
    setGpus: function (indexes) {
      if (indexes.join(",") === gpuIndexes.join(",")) return;
      gpuIndexes = indexes;
      Object.keys(charts).forEach(function (k) { if (k.startsWith("gpu")) { charts[k].plot.destroy(); delete charts[k]; } });
    },

    // The last `seconds` of the live frames.
    drawLive: function (seconds) {
      windowSeconds = seconds;
      ensureCharts(false);
      let start = 0;
      const from = live.t.length ? live.t[live.t.length - 1] - seconds : 0;
      while (start < live.t.length && live.t[start] < from) start += 1;
      const t = live.t.slice(start);
      Object.values(charts).forEach(function (chart) {
        const data = [t].concat(chart.names.map(function (n) { return (live.cols[n] || []).slice(start); }));
        chart.plot.setData(data);
        mark(chart, t);
      });
    },

    // An answer of /api/telemetry/history: per-minute averages with their min/max bands.
    drawHistory: function (answer) {
      windowSeconds = null;
      ensureCharts(true);
      const t = answer.t.map(function (ms) { return ms / 1000; });
      const nulls = t.map(function () { return null; });
      Object.values(charts).forEach(function (chart) {
        const s = function (n, k) { return answer.series[n] ? answer.series[n][k] : nulls; };
        const data = [t].concat(chart.names.map(function (n) { return s(n, "avg"); }));
        chart.names.forEach(function (n) { data.push(s(n, "max"), s(n, "min")); });
        chart.plot.setData(data);
        mark(chart, t);
      });
    },
  };
}
