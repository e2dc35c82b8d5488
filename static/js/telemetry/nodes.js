// The node grid: one small multiple per node (name, status, CPU, memory, GPU utilization and
// memory, loaded models and a two-minute sparkline: GPU utilization and memory, or CPU and
// memory without a GPU). Cards
// the server did not render (a node that came up after the page loaded) are added here.
// A card's status on a hub is the node's recorded one (pending, healthy, unhealthy, offline,
// draining: data-recorded-status, refreshed from data-nodes-url every few seconds); without one
// (the embedded host) it comes from the frames' age.

import { el } from "./dom.js";
import { pct } from "./format.js";

const SPARK_SECONDS = 120;
const STATUS_POLL_MS = 5000;

function gpuFigures(f) {
  const gpus = f.gpu_state === "ok" ? f.gpus || [] : [];
  if (!gpus.length) return null;
  let util = 0;
  let used = 0;
  let total = 0;
  gpus.forEach(function (g) { util += g.util || 0; used += g.mem_used || 0; total += g.mem_total || 0; });
  return { count: gpus.length, util: util / gpus.length, mem: total ? (100 * used) / total : 0 };
}

function memPercent(f) {
  return f.memory.total_bytes ? (100 * f.memory.used_bytes) / f.memory.total_bytes : 0;
}

function points(samples, key, now) {
  return samples.map(function (s) {
    const x = 120 - ((now - s.t) / 1000) * (120 / SPARK_SECONDS);
    const y = 31 - (Math.max(0, Math.min(100, s[key])) / 100) * 30;
    return x.toFixed(1) + "," + y.toFixed(1);
  }).join(" ");
}

export function createNodeGrid(root, focus, unhealthySeconds) {
  const grid = root.querySelector('[data-role="nodes"]');
  const nodes = {}; // host → { card, samples: [{t, a, b}], last, seen }
  const recorded = {}; // host → the node's recorded status, on a hub
  grid.querySelectorAll(".node-card[data-recorded-status]").forEach(function (card) {
    recorded[card.dataset.host] = card.dataset.recordedStatus;
  });

  function field(card, name) { return card.querySelector('[data-field="' + name + '"]'); }

  function cardFor(host) {
    let node = nodes[host];
    if (node) return node;
    let card = grid.querySelector('.node-card[data-host="' + CSS.escape(host) + '"]');
    if (!card) {
      const empty = root.querySelector('[data-role="no-nodes"]');
      if (empty) empty.remove();
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("class", "spark");
      svg.setAttribute("viewBox", "0 0 120 32");
      svg.setAttribute("preserveAspectRatio", "none");
      svg.setAttribute("aria-hidden", "true");
      ["spark-a", "spark-b"].forEach(function (name) {
        const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
        line.dataset.field = name;
        svg.append(line);
      });
      const figure = function (label, name) { return el("div", {}, [el("dt", { text: label }), el("dd", { "data-field": name, text: "—" })]); };
      card = el("a", { class: "node-card", href: "?host=" + encodeURIComponent(host), "data-host": host, "data-testid": "node-card" }, [
        el("header", {}, [el("strong", { class: "node-name", text: host }), el("span", { class: "status node-status status-node-healthy", "data-field": "status", text: "healthy" })]),
        el("dl", { class: "node-figures" }, [figure("CPU", "cpu"), figure("Memory", "mem"), figure("GPU", "gpu"), figure("VRAM", "vram")]),
        svg,
        el("span", { class: "spark-legend muted" }, [
          el("span", { "data-field": "models", text: "—" }), " · ", el("span", { "data-field": "legend", text: "" }),
        ]),
      ]);
      if (host === focus) card.setAttribute("aria-current", "true");
      grid.append(card);
      const count = root.querySelector('[data-role="node-count"]');
      if (count) count.textContent = String(grid.querySelectorAll(".node-card").length);
    }
    node = nodes[host] = { card: card, samples: [], last: null, seen: 0 };
    return node;
  }

  function sample(node, f) {
    const gpu = gpuFigures(f);
    const s = gpu ? { t: f.t, a: gpu.util, b: gpu.mem } : { t: f.t, a: f.cpu.total, b: memPercent(f) };
    const samples = node.samples;
    if (samples.length && f.t <= samples[samples.length - 1].t) return;
    samples.push(s);
    while (samples.length && samples[0].t < f.t - SPARK_SECONDS * 1000) samples.shift();
  }

  function render(node) {
    const f = node.last;
    if (!f) return;
    const card = node.card;
    const gpu = gpuFigures(f);
    field(card, "cpu").textContent = pct(f.cpu.total);
    field(card, "mem").textContent = pct(memPercent(f));
    field(card, "gpu").textContent = gpu ? pct(gpu.util) : "none";
    field(card, "vram").textContent = gpu ? pct(gpu.mem) : "—";
    if (f.runners) field(card, "models").textContent = f.runners.length + (f.runners.length === 1 ? " model" : " models") + " loaded";
    field(card, "legend").textContent = gpu
      ? gpu.count + " GPU" + (gpu.count === 1 ? "" : "s") + ": utilization · VRAM, 2 min"
      : "no GPU (" + f.gpu_state + "): CPU · memory, 2 min";
    const now = node.samples.length ? node.samples[node.samples.length - 1].t : f.t;
    field(card, "spark-a").setAttribute("points", points(node.samples, "a", now));
    field(card, "spark-b").setAttribute("points", points(node.samples, "b", now));
  }

  // A node's status as the page sees it: the recorded one, unless its frames stopped since
  // (a healthy or draining node silent past the unhealthy limit is unhealthy, as the hub's
  // sweep will record); without a recorded one, frames within the unhealthy limit or not.
  function statusOf(host, now) {
    const node = nodes[host];
    const fresh = node && node.seen ? now - node.seen <= unhealthySeconds * 1000 : null;
    const known = recorded[host];
    if (known) return fresh === false && (known === "healthy" || known === "draining") ? "unhealthy" : known;
    if (fresh === null) return null;
    return fresh ? "healthy" : "unhealthy";
  }

  function renderStatus() {
    const now = Date.now();
    grid.querySelectorAll(".node-card").forEach(function (card) {
      const text = statusOf(card.dataset.host, now);
      const badge = field(card, "status");
      if (!text || !badge || badge.textContent === text) return;
      badge.textContent = text;
      badge.className = "status node-status status-node-" + text;
    });
  }
  setInterval(renderStatus, 1000);

  // The recorded statuses change when an admin approves, drains or resumes a node, and when
  // the hub's sweep ages one: ask for them again every few seconds.
  const nodesUrl = root.dataset.nodesUrl;
  function pollStatuses() {
    fetch(nodesUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (answer) {
        if (!answer) return;
        Object.keys(recorded).forEach(function (host) { delete recorded[host]; });
        answer.items.forEach(function (item) { if (item.recorded) recorded[item.host] = item.status; });
        renderStatus();
      })
      .catch(function () { /* the socket's own state says the hub is unreachable */ });
  }
  if (nodesUrl) setInterval(pollStatuses, STATUS_POLL_MS);

  return {
    // A history message: light frames, enough for the sparkline and the card's figures.
    history: function (host, frames) {
      const node = cardFor(host);
      node.samples = [];
      frames.forEach(function (f) { sample(node, f); });
      if (frames.length && !node.last) node.last = frames[frames.length - 1];
      node.seen = Date.now();
      render(node);
      renderStatus();
    },
    frame: function (f) {
      const node = cardFor(f.host);
      sample(node, f);
      node.last = f;
      node.seen = Date.now();
    },
    // The ongoing alerts of every node's latest frame.
    alerts: function () {
      return Object.values(nodes).reduce(function (all, node) {
        return node.last && node.last.alerts ? all.concat(node.last.alerts) : all;
      }, []);
    },
    // Called once per animation frame with the hosts that changed.
    render: function (hosts) {
      hosts.forEach(function (host) { if (nodes[host]) render(nodes[host]); });
      renderStatus();
    },
  };
}
