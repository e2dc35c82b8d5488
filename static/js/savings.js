// Savings chart: daily avoided spend, local energy cost and net, drawn with the vendored uPlot.
// The server sends exact nano-USD integers; dividing them into dollars here is for drawing only.
(function () {
  "use strict";
  const box = document.getElementById("savings-chart");
  const source = box && document.getElementById(box.dataset.chart);
  if (!box || !source) return;
  const data = JSON.parse(source.textContent);
  if (typeof uPlot === "undefined") {
    box.textContent = "The chart could not load; the tables show the same figures.";
    return;
  }
  const NANO = 1e9;
  const days = data.days.map(function (d) { return Date.parse(d + "T00:00:00Z") / 1000; });
  const dollars = function (list) { return list.map(function (n) { return n / NANO; }); };
  const money = function (v) {
    if (v == null) return "—";
    const abs = Math.abs(v);
    const text = abs >= 1 ? abs.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 })
      : abs === 0 ? "0.00" : abs.toPrecision(3);
    return (v < 0 ? "−$" : "$") + text;
  };
  // Tick labels with just the decimals the tick step needs: $0.01, $0.02 rather than $0.0100.
  const axisMoney = function (u, ticks) {
    const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : 1;
    const digits = Math.min(9, Math.max(0, -Math.floor(Math.log10(step || 1))));
    return ticks.map(function (v) {
      return (v < 0 ? "−$" : "$") + Math.abs(v).toLocaleString(undefined,
        { minimumFractionDigits: digits, maximumFractionDigits: digits });
    });
  };
  const style = getComputedStyle(document.documentElement);
  const color = function (name, fallback) { return style.getPropertyValue(name).trim() || fallback; };
  let plot = null;

  function options(width) {
    return {
      width: width,
      height: width < 500 ? 200 : 260,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
      cursor: { points: { size: 6 } },
      legend: { show: width >= 500 },
      scales: { x: { time: true } },
      axes: [
        { stroke: "#5d6778", grid: { stroke: "#eef1f5" } },
        { stroke: "#5d6778", grid: { stroke: "#eef1f5" }, size: 64, values: axisMoney },
      ],
      series: [
        { value: "{YYYY}-{MM}-{DD}" },
        { label: "Avoided", stroke: color("--sav-avoided", "#2563eb"), width: 1.5,
          fill: "rgba(37, 99, 235, .08)", value: function (u, v) { return money(v); } },
        { label: "Local cost", stroke: color("--sav-local", "#a15c00"), width: 1.5,
          value: function (u, v) { return money(v); } },
        { label: "Net", stroke: color("--sav-net", "#1b7f3b"), width: 2,
          value: function (u, v) { return money(v); } },
      ],
    };
  }

  function draw() {
    const width = Math.max(260, box.clientWidth);
    if (plot) plot.destroy();
    box.textContent = "";
    plot = new uPlot(options(width),
      [days, dollars(data.avoided), dollars(data.local), dollars(data.net)], box);
  }

  draw();
  let pending = null;
  window.addEventListener("resize", function () {
    clearTimeout(pending);
    pending = setTimeout(function () {
      if (plot && Math.abs(plot.width - box.clientWidth) > 8) draw();
    }, 150);
  });
})();
