// Telemetry page: frames over /ws/telemetry/ (acknowledged one by one), uPlot charts filled
// from the history sent on connect, a range picker reading /api/telemetry/history.
(function () {
  "use strict";

  const root = document.getElementById("telemetry");
  if (!root) return;

  const LIVE_SECONDS = 15 * 60;
  const SILENCE_MS = 15000; // no message this long: the connection is dead, open a new one
  const COLORS = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626", "#4b5563"];

  // --- formatting ----------------------------------------------------------------------------

  function bytes(v, digits) {
    if (v === null || v === undefined) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    let n = Math.abs(v);
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    const d = digits === undefined ? (i === 0 ? 0 : n < 10 ? 1 : 0) : digits;
    return (v < 0 ? "-" : "") + n.toFixed(d) + " " + units[i];
  }
  function rate(v) { return v === null || v === undefined ? "—" : bytes(v) + "/s"; }
  function pct(v, d) { return v === null || v === undefined ? "—" : Number(v).toFixed(d || 0) + "%"; }
  function num(v, unit, d) { return v === null || v === undefined ? "—" : Number(v).toFixed(d || 0) + (unit || ""); }
  function energy(j) {
    if (j === null || j === undefined) return "—";
    return j >= 3.6e6 ? (j / 3.6e6).toFixed(2) + " kWh" : j >= 1000 ? (j / 1000).toFixed(1) + " kJ" : j + " J";
  }
  function clock(ms) { return new Date(ms).toLocaleTimeString([], { hour12: false }); }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(function ([k, v]) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else node.setAttribute(k, v);
    });
    (children || []).forEach(function (c) { node.append(c); });
    return node;
  }
  function role(name) { return root.querySelector('[data-role="' + name + '"]'); }
  function setText(name, text) { const node = role(name); if (node && node.textContent !== text) node.textContent = text; }

  // --- series: the same names as opsdash/telemetry/frames.py series_of() ---------------------

  function seriesOf(f) {
    const m = f.memory;
    const out = {
      cpu: f.cpu.total, load1: f.cpu.load[0], mem_used: m.used_bytes,
      mem_percent: m.total_bytes ? (100 * m.used_bytes) / m.total_bytes : 0,
      swap_used: m.swap_used_bytes, disk_read: f.disk.read_bytes_s, disk_write: f.disk.write_bytes_s,
      net_rx: f.net.rx_bytes_s, net_tx: f.net.tx_bytes_s,
    };
    if (f.disk.models_free_bytes !== null && f.disk.models_free_bytes !== undefined) out.models_free = f.disk.models_free_bytes;
    (f.gpus || []).forEach(function (g) {
      ["util", "mem_used", "temp", "power"].forEach(function (k) {
        if (g[k] !== null && g[k] !== undefined) out["gpu" + g.index + "_" + k] = g[k];
      });
    });
    return out;
  }

  // The last 15 minutes, columnar (uPlot's shape): t in seconds, one array per series.
  const live = { t: [], cols: {} };
  function pushLive(frame) {
    const s = seriesOf(frame);
    const t = frame.t / 1000;
    if (live.t.length && t <= live.t[live.t.length - 1]) return;
    const n = live.t.length;
    live.t.push(t);
    Object.keys(s).forEach(function (k) { if (!live.cols[k]) live.cols[k] = new Array(n).fill(null); });
    Object.keys(live.cols).forEach(function (k) { live.cols[k].push(s[k] === undefined ? null : s[k]); });
    let drop = 0;
    while (drop < live.t.length && live.t[drop] < t - LIVE_SECONDS) drop += 1;
    if (drop) {
      live.t.splice(0, drop);
      Object.values(live.cols).forEach(function (c) { c.splice(0, drop); });
    }
  }
  function resetLive() { live.t = []; live.cols = {}; }

  // --- charts --------------------------------------------------------------------------------

  let gpuIndexes = [];
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
  let windowSeconds = 300; // live ranges show a fixed window ending now; null: the data's span

  const charts = {};
  function chartWidth(node) { return Math.max(200, Math.floor(node.getBoundingClientRect().width)); }

  function buildChart(name, node, banded) {
    const fmt = FORMAT[name];
    const defs = lines(name);
    const series = [{}];
    const bands = [];
    defs.forEach(function (def, i) {
      const color = COLORS[i % COLORS.length];
      series.push({ label: def[1], stroke: color, width: 1.6, points: { show: false },
        value: function (u, v) { return v === null || v === undefined ? "—" : fmt(v); } });
    });
    if (banded) {
      defs.forEach(function (def, i) {
        const color = COLORS[i % COLORS.length];
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
      width: chartWidth(node), height: 170, series: series, bands: bands,
      legend: { live: true },
      cursor: { drag: { x: false, y: false }, points: { size: 5 } },
      scales: {
        x: { time: true, range: function (u, min, max) { return windowSeconds && max ? [max - windowSeconds, max] : [min, max]; } },
        y: { range: fixed ? function () { return fixed; } : function (u, min, max) { return [0, Math.max(max * 1.15, floor)]; } },
      },
      axes: [
        { stroke: "#5d6778", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#dfe3ea" } },
        { stroke: "#5d6778", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#dfe3ea" }, size: 70,
          values: function (u, ticks) { return ticks.map(function (v) { return axis(v); }); } },
      ],
      hooks: {
        // Away from the cursor the legend shows the newest values, not dashes.
        setCursor: [function (u) { if (u.cursor.idx === null || u.cursor.idx === undefined) showLatest(u); }],
      },
    };
    node.textContent = "";
    const empty = [[]].concat(series.slice(1).map(function () { return []; }));
    return { plot: new uPlot(opts, empty, node), names: defs.map(function (d) { return d[0]; }), banded: banded, node: node };
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

  function showLatest(u) {
    const t = u.data[0];
    if (t && t.length && (u.cursor.left === undefined || u.cursor.left < 0)) u.setLegend({ idx: t.length - 1 });
  }

  function mark(chart, t) {
    chart.node.dataset.points = String(t.length);
    chart.node.dataset.last = t.length ? String(t[t.length - 1]) : "";
    showLatest(chart.plot);
  }

  function drawLive(seconds) {
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
  }

  function drawHistory(answer) {
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
  }

  let resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      Object.values(charts).forEach(function (c) { c.plot.setSize({ width: chartWidth(c.node), height: 170 }); });
    }, 100);
  });

  // --- the range picker ----------------------------------------------------------------------

  const LIVE_RANGES = { "5m": 300, "15m": 900 };
  let range = "5m";
  let historyTimer = null;

  function loadHistory() {
    const url = root.dataset.historyUrl + "?range=" + encodeURIComponent(range);
    const asked = range;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status + " " + r.statusText); return r.json(); })
      .then(function (answer) { if (asked === range) drawHistory(answer); })
      .catch(function (e) { setText("updated", "history unavailable: " + e.message); });
  }

  root.querySelectorAll("[data-range]").forEach(function (button) {
    button.addEventListener("click", function () {
      range = button.dataset.range;
      root.querySelectorAll("[data-range]").forEach(function (b) { b.setAttribute("aria-checked", String(b === button)); });
      clearInterval(historyTimer);
      if (LIVE_RANGES[range]) {
        drawLive(LIVE_RANGES[range]);
      } else {
        loadHistory();
        historyTimer = setInterval(loadHistory, 60000);
      }
    });
  });

  // --- the numbers ---------------------------------------------------------------------------

  function renderTiles(f) {
    const m = f.memory;
    setText("host", f.host);
    setText("cpu-total", pct(f.cpu.total, 1));
    setText("cpu-sub", "load " + f.cpu.load.map(function (v) { return v.toFixed(2); }).join(" · ") +
      (f.cpu.freq_mhz ? " · " + (f.cpu.freq_mhz / 1000).toFixed(2) + " GHz" : ""));
    setText("mem-percent", pct(m.total_bytes ? (100 * m.used_bytes) / m.total_bytes : 0, 1));
    setText("mem-sub", bytes(m.used_bytes) + " of " + bytes(m.total_bytes) +
      (m.swap_total_bytes ? " · swap " + bytes(m.swap_used_bytes) + " of " + bytes(m.swap_total_bytes) : " · no swap"));
    setText("disk-rate", rate(f.disk.read_bytes_s + f.disk.write_bytes_s));
    setText("disk-sub", "read " + rate(f.disk.read_bytes_s) + " · write " + rate(f.disk.write_bytes_s) +
      (f.disk.models_free_bytes !== null ? " · models disk " + bytes(f.disk.models_free_bytes) + " free" : ""));
    setText("net-rate", rate(f.net.rx_bytes_s + f.net.tx_bytes_s));
    setText("net-sub", "↓ " + rate(f.net.rx_bytes_s) + " · ↑ " + rate(f.net.tx_bytes_s));
    setText("updated", "updated " + clock(f.t));
  }

  function renderCores(f) {
    const strip = role("cores");
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
    setText("cores-sub", cores.length + " logical cores" + (f.cpu.freq_mhz ? " · " + f.cpu.freq_mhz + " MHz" : ""));
  }

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

  function renderGpus(f) {
    const ok = f.gpu_state === "ok";
    setText("gpu-state", ok ? f.gpus.length + " GPU" + (f.gpus.length === 1 ? "" : "s") : "state: " + f.gpu_state);
    role("gpu-explanation").classList.toggle("hidden", ok);
    role("gpu-charts").classList.toggle("hidden", !ok);
    if (!ok) setText("gpu-detail", f.gpu_detail);
    const indexes = ok ? f.gpus.map(function (g) { return g.index; }) : [];
    if (indexes.join(",") !== gpuIndexes.join(",")) {
      gpuIndexes = indexes;
      Object.keys(charts).forEach(function (k) { if (k.startsWith("gpu")) { charts[k].plot.destroy(); delete charts[k]; } });
    }
    const box = role("gpus");
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

  function renderRunners(f) {
    const body = role("runners");
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
    const foot = role("server");
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

  let alertKeys = "";
  function renderAlerts(f) {
    const box = role("banners");
    const alerts = f.alerts || [];
    const keys = alerts.map(function (a) { return a.kind + "/" + a.subject; }).sort().join("|");
    box.textContent = "";
    alerts.forEach(function (a) {
      box.append(el("div", { class: "banner", "data-kind": a.kind }, [
        el("strong", { text: "Alert: " }), el("span", { text: a.message }),
        el("span", { class: "muted small", text: " · since " + clock(a.since) }),
      ]));
    });
    if (keys !== alertKeys) {
      alertKeys = keys; // an episode began or ended: refresh the alert history
      document.body.dispatchEvent(new Event("telemetry-alerts-changed"));
    }
  }

  // Render at most once per animation frame, from the newest frame only.
  let latest = null;
  let scheduled = false;
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(function () {
      scheduled = false;
      if (latest) {
        renderTiles(latest);
        renderCores(latest);
        renderGpus(latest);
        renderRunners(latest);
        renderAlerts(latest);
      }
      // The history alone already fills the charts, before the first live frame.
      if (LIVE_RANGES[range]) drawLive(LIVE_RANGES[range]);
    });
  }

  // --- the socket ----------------------------------------------------------------------------

  let host = null;
  function onMessage(message) {
    if (message.type === "history") {
      if (host && message.host && message.host !== host) return;
      resetLive();
      (message.frames || []).forEach(pushLive);
      const frames = message.frames || [];
      const last = frames[frames.length - 1];
      if (last) {
        host = last.host;
        if (last.gpu_state === "ok" && !gpuIndexes.length) {
          gpuIndexes = last.gpus.map(function (g) { return g.index; });
          role("gpu-charts").classList.remove("hidden");
        }
      }
    } else if (message.type === "frame") {
      if (!host) host = message.host;
      if (message.host !== host) return; // another node's agent (scale-out): one host per page
      pushLive(message);
      latest = message;
    }
    schedule();
  }

  function status(state, text) {
    const node = role("conn");
    node.dataset.state = state;
    node.textContent = text;
  }

  function connect() {
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + root.dataset.ws;
    let delay = 500;
    let socket = null;
    let silence = null;
    function watch() {
      clearTimeout(silence);
      silence = setTimeout(function () { if (socket) socket.close(); }, SILENCE_MS);
    }
    function open() {
      status("connecting", "connecting…");
      socket = new WebSocket(url);
      socket.addEventListener("open", function () { status("live", "live"); watch(); });
      socket.addEventListener("message", function (e) {
        watch();
        delay = 500;
        let message = null;
        try { message = JSON.parse(e.data); } catch (err) { return; }
        socket.send('{"type":"ack"}');
        onMessage(message);
      });
      socket.addEventListener("close", function (e) {
        clearTimeout(silence);
        socket = null;
        if (e.code === 4403) { status("closed", "not allowed: sign in again"); return; }
        // Daphne closes every socket after 24 h, a stalled one after the stall limit, a restart
        // all of them: come back with backoff (and jitter, so pages do not return in step).
        const wait = Math.round(delay * (0.8 + Math.random() * 0.4));
        status("reconnecting", "reconnecting in " + Math.ceil(wait / 1000) + " s…");
        setTimeout(open, wait);
        delay = Math.min(delay * 2, 15000);
      });
    }
    open();
  }

  connect();
})();
