// Savings pages: the daily chart (vendored uPlot) and the range form that applies at once.
// The server sends exact nano-USD integers; dividing them into dollars here is for drawing only.
import {
  dayLabel, daySplits, dollars, money, moneyTicks, pointStyle, seconds, yRange,
} from "./savings-chart.js";

// A range form applies as soon as it changes: the preset and node selects through forms.js
// (data-autosubmit), the dates here once a whole date is in (typing one fires a change for each
// digit of the year). The Apply button stays for a browser without scripts.
function liveRange() {
  document.querySelectorAll("form.range-form").forEach(function (form) {
    form.classList.add("range-live");
    let pending = null;
    form.querySelectorAll("input[type=date]").forEach(function (input) {
      input.addEventListener("change", function () {
        clearTimeout(pending);
        if (!/^[12]\d{3}-\d{2}-\d{2}$/.test(input.value)) return;
        pending = setTimeout(function () {
          const preset = form.elements.range;
          if (preset) preset.value = "";  // a chosen date is a custom range
          form.submit();
        }, 600);
      });
    });
  });
}

function chart() {
  const box = document.getElementById("savings-chart");
  const source = box && document.getElementById(box.dataset.chart);
  if (!box || !source) return;  // no priced runs: the page shows a hint instead
  const data = JSON.parse(source.textContent);
  if (typeof uPlot === "undefined") {
    box.textContent = "The chart could not load; the tables show the same figures.";
    return;
  }
  const days = seconds(data.days);
  const series = [dollars(data.avoided), dollars(data.local), dollars(data.net)];
  const range = yRange(series);
  // Colours are read from the CSS variables each time the chart is drawn, so it follows the
  // light or dark theme (static/js/theme.js announces a change).
  const color = function (name, fallback) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
  };
  const line = function (index, label, stroke, width, extra) {
    const points = pointStyle(index, days.length, color("--surface", "#fff"));
    return Object.assign({
      label: label, stroke: stroke, width: width,
      points: { show: points.show, size: points.size, fill: points.fill || stroke },
      value: function (u, v) { return money(v); },
    }, extra || {});
  };
  let plot = null;
  // The axes are drawn on a canvas: what they say is kept on the box too (data-x-labels,
  // data-y-labels), for a check or an assistive tool to read.
  const shown = function (name, labels) {
    box.dataset[name] = labels.join(" | ");
    return labels;
  };

  function options(width) {
    const axis = color("--chart-axis", "#5d6778");
    const grid = color("--chart-grid", "#eef1f5");
    const avoided = color("--sav-avoided", "#2563eb");
    // The avoided area: its line's colour, faint (an alpha byte on a 6-digit hex colour).
    const area = /^#[0-9a-f]{6}$/i.test(avoided) ? avoided + "14" : "rgba(37, 99, 235, .08)";
    return {
      width: width,
      height: width < 500 ? 200 : 260,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
      cursor: { points: { size: function (u, i) { return pointStyle(i, 1).size; } } },
      legend: { show: width >= 500 },
      scales: { x: { time: true }, y: { range: function () { return range; } } },
      axes: [
        {
          stroke: axis, grid: { stroke: grid },
          splits: function () { return daySplits(days, width - 80); },
          values: function (u, splits) {
            return shown("xLabels", splits.map(function (s) { return dayLabel(s, data.today); }));
          },
        },
        {
          stroke: axis, grid: { stroke: grid },
          values: function (u, ticks) { return shown("yLabels", moneyTicks(ticks)); },
          // As wide as its longest label, so a "$" is never cut off.
          size: function (u, values) {
            const longest = (values || []).reduce(function (n, v) { return Math.max(n, v.length); }, 3);
            return 18 + longest * 7;
          },
        },
      ],
      series: [
        { value: "{YYYY}-{MM}-{DD}" },
        line(1, "Avoided", avoided, 1.5, { fill: area }),
        line(2, "Local cost", color("--sav-local", "#a15c00"), 1.5),
        line(3, "Net", color("--sav-net", "#1b7f3b"), 2),
      ],
    };
  }

  function draw() {
    const width = Math.max(260, box.clientWidth);
    if (plot) plot.destroy();
    box.textContent = "";
    plot = new uPlot(options(width), [days].concat(series), box);
  }

  draw();
  document.addEventListener("opsdash:theme", draw);
  let resizing = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizing);
    resizing = setTimeout(function () {
      if (plot && Math.abs(plot.width - box.clientWidth) > 8) draw();
    }, 150);
  });
}

liveRange();
chart();
