// The framepipe live page: video streams, statistics, graph and results.
//
// Video: each node's /video/<node> MJPEG stream is read with fetch() and parsed
// here, part by part, so the page knows every frame's capture time (the
// X-Frame-Timestamp part header) and can show its latency. Only the newest
// complete frame of each read is decoded and drawn; while the page decodes it
// does not read, so TCP flow control makes the server skip frames for this
// page alone. Browsers without streaming fetch fall back to a plain <img>.
//
// window.framepipe holds the page's counters (frames received and shown,
// latencies, update counts): tests and the curious read it.
"use strict";

(() => {
  const POLL_MS = 1000;
  const GRAPH_MS = 5000;
  const MAX_AUTO_STREAMS = 4; // browsers allow ~6 connections per host over HTTP/1.1
  const KEEP = 120; // latency samples kept per stream

  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  const authHeaders = token ? { Authorization: "Bearer " + token } : {};
  const withToken = (path) =>
    token ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : path;
  const canStream = !!(window.ReadableStream && window.createImageBitmap && window.fetch);

  const state = {
    streams: {},
    statsUpdates: 0,
    resultsUpdates: 0,
    graphUpdates: 0,
    clipsUpdates: 0,
    hasClips: false,
    clips: [],
    connected: false,
    lastStats: null,
  };
  window.framepipe = state;

  const $ = (sel) => document.querySelector(sel);
  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child);
    return node;
  };
  const svg = (tag, attrs = {}) => {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  };
  const fmt = (x, digits = 1) => (x === undefined || x === null ? "–" : Number(x).toFixed(digits));
  const median = (xs) => {
    if (!xs.length) return null;
    const s = [...xs].sort((a, b) => a - b);
    return s[Math.floor(s.length / 2)];
  };

  async function getJSON(path) {
    const response = await fetch(path, { headers: authHeaders, cache: "no-store" });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  // ---- video -------------------------------------------------------------------------

  const CRLFCRLF = [13, 10, 13, 10];
  const decoder = new TextDecoder("ascii");

  class Viewer {
    constructor(stream, auto) {
      this.node = stream.node;
      this.source = stream.source;
      this.id = stream.node === stream.source ? stream.node : `${stream.node}@${stream.source}`;
      this.counters = {
        node: this.node, source: this.source, received: 0, shown: 0, lastIndex: -1,
        latencyMs: [], transferMs: [], fps: 0, times: [], running: false, errors: 0,
      };
      state.streams[this.id] = this.counters;
      this.canvas = canStream ? el("canvas", { width: 16, height: 9 }) : el("img", { alt: this.id });
      this.rate = el("span", { class: "rate" }, "");
      const label = this.node === this.source ? this.node : `${this.node} · ${this.source}`;
      this.figure = el("figure", { class: "video", "data-stream": this.id },
        this.canvas, el("figcaption", {}, el("span", { class: "name" }, label), this.rate));
      this.wanted = auto;
      if (!auto) {
        this.button = el("button", { type: "button" }, "▶ watch");
        this.button.addEventListener("click", () => {
          this.wanted = true;
          this.button.remove();
          this.start();
        });
        this.figure.append(this.button);
      }
      $("#videos").append(this.figure);
      if (auto) this.start();
    }

    url() {
      return `video/${encodeURIComponent(this.node)}?source=${encodeURIComponent(this.source)}`;
    }

    start() {
      if (!this.wanted || this.abort || document.hidden) return;
      if (!canStream) {
        this.canvas.src = withToken(this.url());
        this.counters.running = true;
        return;
      }
      this.abort = new AbortController();
      this.counters.running = true;
      this.read(this.abort.signal).catch(() => {}).finally(() => {
        const aborted = this.abort === null || this.abort.signal.aborted;
        this.abort = null;
        this.counters.running = false;
        // The server ended the stream or the network failed: try again unless stopped.
        if (!aborted && !this.removed) setTimeout(() => this.start(), 1000);
      });
    }

    stop() {
      if (this.abort) {
        const abort = this.abort;
        this.abort = null;
        abort.abort();
      }
      if (!canStream) this.canvas.removeAttribute("src");
      this.counters.running = false;
    }

    remove() {
      this.removed = true;
      this.stop();
      this.figure.remove();
      delete state.streams[this.id];
    }

    async read(signal) {
      const response = await fetch(this.url(), { headers: authHeaders, signal, cache: "no-store" });
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      const reader = response.body.getReader();
      let buf = new Uint8Array(1 << 18);
      let len = 0;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        if (len + value.length > buf.length) {
          const bigger = new Uint8Array(Math.max(buf.length * 2, len + value.length));
          bigger.set(buf.subarray(0, len));
          buf = bigger;
        }
        buf.set(value, len);
        len += value.length;
        let newest = null;
        for (;;) {
          const end = indexOf(buf, len, CRLFCRLF);
          if (end < 0) break;
          const headers = parseHeaders(decoder.decode(buf.subarray(0, end)));
          const size = parseInt(headers["content-length"], 10);
          if (!(size >= 0)) throw new Error("MJPEG part without Content-Length");
          const partEnd = end + 4 + size + 2; // the JPEG is followed by CRLF
          if (len < partEnd) break;
          newest = { jpeg: buf.slice(end + 4, end + 4 + size), headers };
          this.received(headers);
          buf.copyWithin(0, partEnd, len);
          len -= partEnd;
        }
        if (newest) await this.draw(newest);
      }
    }

    received(headers) {
      const c = this.counters;
      const now = Date.now();
      c.received += 1;
      c.lastIndex = parseInt(headers["x-frame-index"], 10);
      const captured = parseFloat(headers["x-frame-timestamp"]) * 1000;
      const sent = parseFloat(headers["x-frame-sent"]) * 1000;
      if (Number.isFinite(captured)) push(c.latencyMs, now - captured);
      if (Number.isFinite(sent)) push(c.transferMs, now - sent);
      c.times.push(performance.now());
      if (c.times.length > 60) c.times.shift();
    }

    async draw(frame) {
      const bitmap = await createImageBitmap(new Blob([frame.jpeg], { type: "image/jpeg" }));
      const canvas = this.canvas;
      if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
        canvas.width = bitmap.width;
        canvas.height = bitmap.height;
        canvas.style.aspectRatio = `${bitmap.width} / ${bitmap.height}`;
      }
      canvas.getContext("2d").drawImage(bitmap, 0, 0);
      bitmap.close();
      this.counters.shown += 1;
    }

    refresh() {
      const c = this.counters;
      const t = c.times;
      const recent = t.length > 1 && performance.now() - t[t.length - 1] < 2000;
      c.fps = recent ? ((t.length - 1) * 1000) / (t[t.length - 1] - t[0]) : 0;
      const latency = median(c.latencyMs);
      if (!canStream) this.rate.textContent = "";
      else if (!c.running) this.rate.textContent = this.wanted ? "paused" : "";
      else this.rate.textContent = `${fmt(c.fps)} fps · ${latency === null ? "–" : fmt(latency, 0)} ms`;
    }
  }

  function push(list, value) {
    list.push(value);
    if (list.length > KEEP) list.shift();
  }

  function indexOf(buf, len, pattern) {
    outer: for (let i = 0; i + pattern.length <= len; i++) {
      for (let j = 0; j < pattern.length; j++) if (buf[i + j] !== pattern[j]) continue outer;
      return i;
    }
    return -1;
  }

  function parseHeaders(text) {
    const headers = {};
    for (const line of text.split("\r\n")) {
      const colon = line.indexOf(":");
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    return headers;
  }

  const viewers = new Map();

  function syncViewers(streams) {
    const seen = new Set();
    for (const stream of streams) {
      const id = stream.node === stream.source ? stream.node : `${stream.node}@${stream.source}`;
      seen.add(id);
      if (!viewers.has(id)) viewers.set(id, new Viewer(stream, viewers.size < MAX_AUTO_STREAMS));
    }
    for (const [id, viewer] of viewers) {
      if (!seen.has(id)) {
        viewer.remove();
        viewers.delete(id);
      }
    }
    $("#no-video").hidden = viewers.size > 0;
    for (const viewer of viewers.values()) viewer.refresh();
  }

  document.addEventListener("visibilitychange", () => {
    // A hidden tab reads nothing: the server then has nothing to send to it.
    for (const viewer of viewers.values()) document.hidden ? viewer.stop() : viewer.start();
  });

  // ---- statistics ----------------------------------------------------------------------

  function renderStats(nodes) {
    const body = $("#stats tbody");
    const rows = [];
    for (const n of Object.values(nodes)) {
      const reasons = Object.entries(n.dropped_by || {})
        .filter(([, v]) => v)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ");
      const stateText = n.state + (n.reconnects ? ` (${n.reconnects} reconnects)` : "");
      rows.push(el("tr", { "data-node": n.name },
        el("td", {}, n.name),
        el("td", {}, n.kind),
        el("td", {},
          el("span", { class: `state ${n.state}` }, stateText),
          // A live camera whose picture cannot be trusted says so beside its state.
          n.health && n.health !== "ok"
            ? el("span", { class: "health", title: n.health_detail || "" }, ` ${n.health}`)
            : ""),
        el("td", { class: "num" }, fmt(n.fps)),
        el("td", { class: "num" }, String(n.processed)),
        el("td", {}, String(n.dropped) + (reasons ? ` (${reasons})` : "")),
        el("td", { class: "num" }, `${fmt(n.latency_ms.p50)} / ${fmt(n.latency_ms.p95)}`),
        el("td", { class: "num" }, `${fmt(n.age_ms.p50, 0)} / ${fmt(n.age_ms.p95, 0)}`),
        el("td", { class: "num" }, fmt(n.wait_ms.p50)),
        el("td", { class: "num" }, String(n.errors)),
      ));
    }
    body.replaceChildren(...rows);
  }

  // ---- graph -----------------------------------------------------------------------------

  let graphNames = "";

  function renderGraph(graph) {
    // Top to bottom: a node's row is its depth (longest path from a source), so
    // every edge points down; nodes of one depth sit side by side.
    const box = { w: 150, h: 40, gapX: 14, gapY: 26, pad: 4 };
    const depth = {};
    for (const node of graph.nodes) {
      const ups = node.inputs.map((name) => depth[name]).filter((d) => d !== undefined);
      depth[node.name] = ups.length ? Math.max(...ups) + 1 : 0;
    }
    const rows = [];
    for (const node of graph.nodes) (rows[depth[node.name]] ||= []).push(node);
    const widest = Math.max(1, ...rows.map((row) => row.length));
    const width = box.pad * 2 + widest * box.w + (widest - 1) * box.gapX;
    const height = box.pad * 2 + rows.length * box.h + Math.max(0, rows.length - 1) * box.gapY;
    const at = {};
    rows.forEach((row, y) => {
      const rowWidth = row.length * box.w + (row.length - 1) * box.gapX;
      row.forEach((node, x) => {
        at[node.name] = {
          x: (width - rowWidth) / 2 + x * (box.w + box.gapX),
          y: box.pad + y * (box.h + box.gapY),
        };
      });
    });
    const root = $("#graph");
    root.setAttribute("viewBox", `0 0 ${width} ${Math.max(height, 10)}`);
    root.style.maxWidth = `${width * 1.25}px`;
    const parts = [];
    for (const edge of graph.edges) {
      const a = at[edge.from], b = at[edge.to];
      if (!a || !b) continue;
      const x1 = a.x + box.w / 2, y1 = a.y + box.h, x2 = b.x + box.w / 2, y2 = b.y;
      const mid = (y1 + y2) / 2;
      parts.push(svg("path", { d: `M${x1},${y1} C${x1},${mid} ${x2},${mid} ${x2},${y2}` }));
    }
    for (const node of graph.nodes) {
      const p = at[node.name];
      const g = svg("g", { class: `node ${node.kind}`, "data-node": node.name,
        transform: `translate(${p.x},${p.y})` });
      g.append(svg("rect", { width: box.w, height: box.h, rx: 6 }));
      const name = svg("text", { x: 8, y: 16 });
      name.textContent = node.name;
      const sub = svg("text", { x: 8, y: 32, class: "sub" });
      sub.textContent = node.type + (node.fps ? ` @${node.fps} fps` : "");
      const live = svg("text", { x: box.w - 8, y: 16, class: "sub live", "text-anchor": "end" });
      g.append(name, sub, live);
      parts.push(g);
    }
    root.replaceChildren(...parts);
    $("#mode").textContent = graph.mode || "";
    state.graphUpdates += 1;
  }

  function updateGraphLive(nodes) {
    for (const g of document.querySelectorAll("#graph g.node")) {
      const n = nodes[g.dataset.node];
      if (!n) continue;
      g.querySelector("text.live").textContent = `${fmt(n.fps)} fps`;
      g.classList.toggle("failed", n.state === "failed");
    }
  }

  async function refreshGraph() {
    try {
      const graph = await getJSON("api/graph");
      state.hasClips = graph.nodes.some((n) => n.type === "Clips");
      renderGraph(graph);
      if (state.lastStats) updateGraphLive(state.lastStats.nodes);
    } catch (err) {
      /* shown by the link indicator */
    }
  }

  // ---- results ---------------------------------------------------------------------------

  // One short line per result: long lists show their length and first item.
  function compact(value, limit = 240) {
    let text;
    if (Array.isArray(value) && value.length > 1 && typeof value[0] === "object") {
      text = `${value.length} × ${JSON.stringify(value[0])}`;
    } else {
      text = JSON.stringify(value);
    }
    return text.length > limit ? text.slice(0, limit - 1) + "…" : text;
  }

  function renderResults(items) {
    const box = $("#results");
    if (!items.length) return;
    box.classList.remove("muted");
    box.replaceChildren(...items.map((item) => {
      // Newest result first: the node's own, then what it was computed from.
      const entries = Object.entries(item.results || {}).reverse();
      const lines = entries.map(([k, v]) => `${k}: ${compact(v)}`);
      const title = item.node === item.source ? item.node : `${item.node} · ${item.source}`;
      return el("div", { class: "result", "data-node": item.node },
        el("h3", {}, `${title}  #${item.index}`), el("pre", {}, lines.join("\n") || "{}"));
    }));
    state.resultsUpdates += 1;
  }

  // ---- clips -----------------------------------------------------------------------------

  // The newest clips of the run's Clips sinks; a click plays one in the player above them.
  function renderClips(items) {
    const panel = $("#clips-panel");
    panel.hidden = false;
    state.clips = items;
    state.clipsUpdates += 1;
    const shown = items.map((c) => c.url).join("\n");
    const list = $("#clips");
    if (list.dataset.shown === shown) return;
    list.dataset.shown = shown;
    if (!items.length) {
      list.replaceChildren(el("li", { class: "muted" }, "none yet"));
      return;
    }
    list.replaceChildren(...items.map((clip) => {
      const when = clip.first_event_time
        ? new Date(clip.first_event_time * 1000).toLocaleTimeString() : "";
      const button = el("button", { type: "button", "data-url": clip.url },
        `${clip.source} · ${clip.name} · ${fmt(clip.duration_s)} s · ${when}`);
      button.addEventListener("click", () => play(clip));
      return el("li", {}, button);
    }));
  }

  function play(clip) {
    const player = $("#clip-player");
    player.hidden = false;
    player.src = withToken(clip.url);
    player.dataset.url = clip.url;
    player.play().catch(() => { /* the controls let the user start it */ });
  }

  // ---- polling ---------------------------------------------------------------------------

  function setLink(up, text) {
    state.connected = up;
    const link = $("#link");
    link.textContent = text;
    link.className = `pill ${up ? "link-up" : "link-down"}`;
  }

  async function poll() {
    try {
      const stats = await getJSON("api/stats");
      state.lastStats = stats;
      state.statsUpdates += 1;
      setLink(true, "live");
      renderStats(stats.nodes);
      syncViewers(stats.streams);
      const names = Object.keys(stats.nodes).join("\n");
      if (names !== graphNames) {
        graphNames = names;
        await refreshGraph();
      }
      updateGraphLive(stats.nodes);
      $("#clock").textContent = new Date(stats.time * 1000).toLocaleTimeString();
      renderResults(await getJSON("api/results"));
      if (state.hasClips) renderClips(await getJSON("api/clips"));
    } catch (err) {
      setLink(false, "disconnected – retrying");
    }
  }

  for (const id of ["metrics-link", "stats-link", "graph-link", "results-link"]) {
    const a = document.getElementById(id);
    a.href = withToken(a.getAttribute("href"));
  }
  poll();
  setInterval(poll, POLL_MS);
  setInterval(() => { if (!document.hidden) refreshGraph(); }, GRAPH_MS);
})();
