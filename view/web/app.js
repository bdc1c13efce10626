// beostatus web view: one canvas for the whole grid, fed by server-sent
// deltas. Row layout (view/delta.go): [node, state, cpu%, mem%, load1*100, cpus, net B/s].
"use strict";
(function () {
  const NODE = 0, STATE = 1, CPU = 2, MEM = 3, LOAD = 4, CPUS = 5, NET = 6;
  const UP = 0, LATE = 1, DOWN = 2, STATES = ["up", "late", "down"];
  const NET_SCALE = Math.log10(2 * 10e9 / 8);
  const nodes = new Map(); // node -> row
  let seq = 0, figure = 0, order = 0, query = "", layout = [], tile = 16, cols = 1, downAfter = 0;
  let selected = -1, detailTimer = 0, es = null;
  // Update costs: the whole handler, and of the worst update its parse and draw parts.
  const stats = { updates: 0, totalMs: 0, maxMs: 0, lastMs: 0, bytes: 0, fulls: 0, maxParseMs: 0, maxDrawMs: 0, drawMs: 0 };
  const $ = (id) => document.getElementById(id);
  const canvas = $("grid"), ctx = canvas.getContext("2d");

  function level(r, f) {
    let v = 0;
    if (f === 0) v = r[CPU] / 100;
    else if (f === 1) v = r[MEM] / 100;
    else if (f === 2) v = r[LOAD] / 100 / Math.max(r[CPUS], 1);
    else if (r[NET] > 1) v = Math.log10(r[NET]) / NET_SCALE;
    return Math.min(Math.max(v, 0), 1);
  }
  function rgb(v) { // the same ramp as view.RGB
    return v < 0.5 ? `rgb(${40 + 400 * v | 0},170,60)` : `rgb(240,${170 - 260 * (v - 0.5) | 0},60)`;
  }
  function value(r, f) {
    if (f === 0 || f === 1) return (f === 0 ? r[CPU] : r[MEM]) + "%";
    if (f === 2) return (r[LOAD] / 100).toFixed(2);
    return bytes(r[NET]) + "/s";
  }
  function bytes(n) {
    const u = "KMGTPE"; let i = -1;
    if (n < 1024) return String(Math.round(n));
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (n < 10 ? n.toFixed(1) : Math.round(n)) + u[i];
  }
  function matches(r, w) {
    if (STATES.includes(w)) return STATES[r[STATE]] === w;
    const m = /^(\d+)-(\d+)$/.exec(w);
    if (m) return r[NODE] >= +m[1] && r[NODE] <= +m[2];
    if (/^\d+$/.test(w)) return r[NODE] === +w;
    return false;
  }
  function visible() {
    const words = query.toLowerCase().split(/\s+/).filter(Boolean);
    const out = [];
    for (const r of nodes.values()) if (words.every((w) => matches(r, w))) out.push(r);
    if (order === 1) out.sort((a, b) => level(b, figure) - level(a, figure) || a[NODE] - b[NODE]);
    else if (order === 2) out.sort((a, b) => b[STATE] - a[STATE] || a[NODE] - b[NODE]);
    else out.sort((a, b) => a[NODE] - b[NODE]);
    return out;
  }
  function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

  // 101 colours, made once: setting a canvas fill style parses its string.
  const PALETTE = Array.from({ length: 101 }, (_, i) => rgb(i / 100));
  let dirty = true; // the set of nodes, their order or the filter changed

  // The theme's colours, read once per theme (getComputedStyle after the
  // page changed recalculates its style), as CSS and as pixels.
  let colours = null;
  function colour(name) {
    if (!colours) {
      colours = {};
      for (const v of ["--bg", "--fg", "--late", "--down", "--downline"]) colours[v] = css(v);
      colours.px = [...PALETTE, colours["--late"], colours["--down"], colours["--bg"]].map(pixel);
    }
    return colours[name];
  }
  // pixel is a CSS colour as ImageData holds it, read through a 1×1 canvas.
  const probe = document.createElement("canvas").getContext("2d", { willReadFrequently: true });
  function pixel(c) {
    probe.clearRect(0, 0, 1, 1); probe.fillStyle = c; probe.fillRect(0, 0, 1, 1);
    return new Uint32Array(probe.getImageData(0, 0, 1, 1).data.buffer)[0];
  }
  // The grid's room, kept by a ResizeObserver: reading it in draw would
  // force a layout after every change of the page.
  let roomW = 0, roomH = 0;
  const LATE_C = 101, DOWN_C = 102, BG_C = 103;
  let img = null, px = null; // the grid's pixels, reused by every draw
  let countsHTML = "";

  function draw() {
    if (dirty || order !== 0) { layout = visible(); dirty = false; }
    const W = roomW - 12, H = roomH - 12, n = Math.max(layout.length, 1);
    tile = Math.max(8, Math.min(64, Math.floor(Math.sqrt((W * H) / n))));
    cols = Math.max(1, Math.floor(W / tile));
    while (tile > 8 && Math.ceil(n / cols) * tile > H) { tile--; cols = Math.max(1, Math.floor(W / tile)); }
    const rows = Math.ceil(n / cols), dpr = window.devicePixelRatio || 1;
    const cw = cols * tile, ch = rows * tile;
    if (canvas.width !== Math.round(cw * dpr) || canvas.height !== Math.round(ch * dpr)) {
      canvas.width = Math.round(cw * dpr); canvas.height = Math.round(ch * dpr);
      canvas.style.width = cw + "px"; canvas.style.height = ch + "px";
    }
    // The tiles are written as pixels and put in one copy: as canvas
    // paths, 10,000 rectangles cost the page 10-20 ms of rasterising,
    // now and then inside the update (docs/benchmarks.md).
    const Wd = canvas.width, Hd = canvas.height;
    if (!img || img.width !== Wd || img.height !== Hd) { img = ctx.createImageData(Wd, Hd); px = new Uint32Array(img.data.buffer); }
    const pal = colour("px");
    px.fill(pal[BG_C]);
    const gap = tile >= 16 ? 2 : 1, s = tile - gap, L = layout.length, downs = [];
    const side = Math.max(Math.round(s * dpr), 1);
    for (let i = 0; i < L; i++) {
      const r = layout[i], st = r[STATE];
      if (st === DOWN) downs.push(i);
      const p = pal[st === DOWN ? DOWN_C : st === LATE ? LATE_C : Math.round(100 * level(r, figure))];
      const x0 = Math.round((i % cols) * tile * dpr), y0 = Math.round(Math.floor(i / cols) * tile * dpr);
      const x1 = Math.min(x0 + side, Wd), y1 = Math.min(y0 + side, Hd);
      for (let y = y0; y < y1; y++) {
        for (let o = y * Wd + x0, e = y * Wd + x1; o < e; o++) px[o] = p;
      }
    }
    ctx.putImageData(img, 0, 0);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    if (downs.length) { // a red cross and frame: down is unmistakable at any size, in any theme
      ctx.strokeStyle = colour("--downline"); ctx.lineWidth = tile >= 16 ? 2 : 1; ctx.beginPath();
      for (const i of downs) {
        const x = (i % cols) * tile, y = Math.floor(i / cols) * tile;
        ctx.moveTo(x + 1, y + 1); ctx.lineTo(x + s - 1, y + s - 1);
        ctx.moveTo(x + s - 1, y + 1); ctx.lineTo(x + 1, y + s - 1);
        ctx.rect(x + 1, y + 1, s - 2, s - 2);
      }
      ctx.stroke();
    }
    const si = layout.findIndex((r) => r[NODE] === selected);
    if (si >= 0) {
      ctx.strokeStyle = colour("--fg"); ctx.lineWidth = 2;
      ctx.strokeRect((si % cols) * tile + 1, Math.floor(si / cols) * tile + 1, s - 2, s - 2);
    }
    if (tile >= 28) {
      ctx.textAlign = "center"; ctx.textBaseline = "middle";
      for (let i = 0; i < layout.length; i++) {
        const r = layout[i], x = (i % cols) * tile, y = Math.floor(i / cols) * tile;
        ctx.fillStyle = r[STATE] === DOWN ? "#fff" : "#000";
        ctx.font = `bold ${Math.floor(tile / 4)}px system-ui, sans-serif`;
        ctx.fillText(String(r[NODE]), x + s / 2, y + s * 0.33);
        ctx.font = `${Math.floor(tile / 5)}px system-ui, sans-serif`;
        ctx.fillText(r[STATE] === DOWN ? "DOWN" : r[STATE] === LATE ? "late" : value(r, figure), x + s / 2, y + s * 0.7);
      }
    }
    let c = [0, 0, 0];
    for (const r of nodes.values()) c[r[STATE]]++;
    const h = `${nodes.size} nodes · ${c[UP]} up · ${c[LATE]} late · <span class="${c[DOWN] ? "ndown" : ""}">${c[DOWN]} down</span>`;
    if (h !== countsHTML) $("counts").innerHTML = countsHTML = h; // unchanged: the page's layout stays valid
  }

  function apply(f) {
    if (f.full) { nodes.clear(); stats.fulls++; dirty = true; }
    else if (f.seq !== seq + 1) { reconnect(); return; } // missed a frame: start again from a full one
    seq = f.seq; downAfter = f.down_after;
    for (const r of f.rows) {
      const old = nodes.get(r[NODE]);
      if (old) { for (let k = 0; k < r.length; k++) old[k] = r[k]; } // in place: the layout holds these rows
      else { nodes.set(r[NODE], r); dirty = true; }
    }
    if (query && f.rows.length) dirty = true; // a state filter may now match other nodes
    if (f.gone && f.gone.length) { for (const n of f.gone) nodes.delete(n); dirty = true; }
    const b = $("banner");
    b.hidden = f.writer_alive;
    if (!f.writer_alive) b.textContent = "recvstats does not have the table open: these figures are frozen";
    const t0 = performance.now();
    draw();
    stats.drawMs = performance.now() - t0;
  }
  function onMessage(e) {
    const t0 = performance.now();
    const f = JSON.parse(e.data), t1 = performance.now();
    stats.drawMs = 0;
    apply(f);
    const ms = performance.now() - t0;
    stats.updates++; stats.totalMs += ms; stats.lastMs = ms;
    if (ms > stats.maxMs) { stats.maxMs = ms; stats.maxParseMs = t1 - t0; stats.maxDrawMs = stats.drawMs; }
    stats.bytes += e.data.length;
  }
  function connect() {
    es = new EventSource("events");
    es.addEventListener("full", onMessage);
    es.addEventListener("delta", onMessage);
    es.onopen = () => { $("conn").textContent = "live"; $("conn").className = ""; };
    es.onerror = () => { $("conn").textContent = "disconnected: retrying"; $("conn").className = "bad"; };
  }
  function reconnect() { if (es) es.close(); seq = 0; connect(); }

  function tileAt(px, py) {
    const col = Math.floor(px / tile), row = Math.floor(py / tile), i = row * cols + col;
    return col < cols && i >= 0 && i < layout.length ? layout[i][NODE] : -1;
  }
  canvas.addEventListener("click", (e) => {
    const rect = canvas.getBoundingClientRect(), n = tileAt(e.clientX - rect.left, e.clientY - rect.top);
    if (n >= 0) showDetail(n);
  });
  function esc(s) { return String(s).replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";"); }
  function bar(pct, label) {
    const p = Math.min(Math.max(pct, 0), 100);
    // Widths are set through the CSSOM after insertion: the page's CSP forbids inline styles.
    return `<div>${esc(label)}</div><div class="bar"><div data-pct="${p}"></div></div>`;
  }
  async function showDetail(n) {
    selected = n; draw();
    clearTimeout(detailTimer);
    const aside = $("detail");
    aside.hidden = false;
    let d;
    try {
      const res = await fetch("api/node/" + n);
      if (!res.ok) throw new Error(await res.text());
      d = await res.json();
    } catch (err) {
      $("d-title").textContent = "node " + n; $("d-body").textContent = String(err);
      return;
    }
    if (selected !== n) return;
    $("d-title").innerHTML = `node ${d.node} <span class="${d.state === "down" ? "st-down" : "muted"}">${esc(d.state.toUpperCase())}</span>`;
    let h = `<div class="muted">${esc(d.addr)} · heard ${d.age_seconds.toFixed(1)} s ago · up since ${esc(new Date(d.boot_time).toLocaleString())}</div>`;
    h += `<h3>CPU ${d.cpu_percent.toFixed(1)}% of ${d.cpus}</h3>`;
    for (const c of d.per_cpu) h += bar(c.percent, `cpu${c.cpu} ${c.percent.toFixed(0)}% · ${c.mhz.toFixed(0)} MHz`);
    const mem = d.mem_total ? 100 * d.mem_used / d.mem_total : 0, swapUsed = d.swap_total - d.swap_free;
    h += `<h3>Memory</h3>` + bar(mem, `${bytes(d.mem_used)} of ${bytes(d.mem_total)} used`);
    h += bar(d.swap_total ? 100 * swapUsed / d.swap_total : 0, `swap ${bytes(swapUsed)} of ${bytes(d.swap_total)}`);
    h += `<h3>Load</h3><div>${d.load1.toFixed(2)} ${d.load5.toFixed(2)} ${d.load15.toFixed(2)} · ${d.procs_running} running of ${d.procs_total}</div>`;
    h += `<h3>Network</h3><table><tr><th>device</th><th>in/s</th><th>out/s</th><th>in</th><th>out</th></tr>`;
    for (const x of d.net) h += `<tr><td>${esc(x.name)}</td><td>${bytes(x.rx_bytes_per_sec)}</td><td>${bytes(x.tx_bytes_per_sec)}</td><td>${bytes(x.rx_bytes)}</td><td>${bytes(x.tx_bytes)}</td></tr>`;
    h += `</table>`;
    $("d-body").innerHTML = h;
    for (const b of document.querySelectorAll("#d-body .bar > div")) {
      const p = +b.dataset.pct;
      b.style.width = p + "%"; b.style.background = rgb(p / 100);
    }
    const why = await loadHistory(n, d.cpus);
    if (selected !== n) return;
    $("d-history").hidden = !hist;
    $("d-nohistory").hidden = !!hist;
    if (hist) drawCharts(); else $("d-nohistory").textContent = "No history: " + why;
    detailTimer = setTimeout(() => { if (selected === n && !aside.hidden) showDetail(n); }, 2000);
  }

  // History charts. The day's series is fetched whole once a minute; the
  // 15 minutes' at every refresh of the detail.
  let hist = null, histAt = 0, histCPUs = 1;
  const charts = {}; // what was drawn, for tests: per chart its points, last values and gaps
  async function loadHistory(n, cpus) {
    const whole = !hist || hist.node !== n || Date.now() - histAt > 60000;
    let h;
    try {
      const res = await fetch(`api/node/${n}/history` + (whole ? "" : "?since=15m"));
      if (!res.ok) { hist = null; return (await res.text()).trim(); }
      h = await res.json();
    } catch (err) { hist = null; return String(err); }
    if (whole || !hist || hist.node !== h.node) { hist = h; histAt = Date.now(); } else { hist.fine = h.fine; hist.mem_total = h.mem_total; }
    histCPUs = Math.max(cpus, 1);
    return "";
  }
  function drawCharts() {
    charts.node = hist.node;
    charts.fine = drawChart($("c-fine"), hist.fine, [["-15 min", 0], ["-10", 1 / 3], ["-5", 2 / 3], ["now", 1]]);
    charts.minutes = drawChart($("c-minutes"), hist.minutes, [["-24 h", 0], ["-18", 0.25], ["-12", 0.5], ["-6", 0.75], ["now", 1]]);
  }
  // drawChart draws one series as four strips (CPU, memory, load, network
  // in and out) over its window, lines broken and shaded where the node
  // was down, and returns what it drew.
  function drawChart(cv, s, ticks) {
    const dpr = window.devicePixelRatio || 1, W = Math.max(cv.parentElement.clientWidth, 200), SH = 44, AX = 14, H = 4 * SH + AX;
    if (cv.width !== W * dpr || cv.height !== H * dpr) {
      cv.width = W * dpr; cv.height = H * dpr; cv.style.width = W + "px"; cv.style.height = H + "px";
    }
    const c = cv.getContext("2d");
    c.setTransform(dpr, 0, 0, dpr, 0, 0);
    c.clearRect(0, 0, W, H);
    const span = Math.max(s.to - s.from, 1), X = (t) => (t - s.from) / span * W;
    const peak = (v, floor) => v.reduce((a, b) => Math.max(a, b), floor);
    const netHi = Math.max(peak(s.rx, 1024), peak(s.tx, 1024));
    const strips = [
      { name: "cpu", vals: s.cpu, hi: 100, fmt: (v) => v.toFixed(0) + "%", color: rgb(0.8) },
      { name: "mem", vals: s.mem, hi: hist.mem_total || peak(s.mem, 1), fmt: (v) => bytes(v), color: rgb(0.45) },
      { name: "load1", vals: s.load1, hi: peak(s.load1, histCPUs), fmt: (v) => v.toFixed(2), color: css("--fg") },
      { name: "in", vals: s.rx, hi: netHi, fmt: (v) => bytes(v) + "/s", color: css("--rx"), also: { name: "out", vals: s.tx, color: css("--tx") } },
    ];
    const drawn = { points: 0, gaps: s.gaps.length, from: s.from, to: s.to, last: {} };
    c.font = "11px system-ui, sans-serif"; c.textBaseline = "top";
    strips.forEach((st, k) => {
      const y0 = k * SH, h = SH - 14, top = y0 + 13;
      c.fillStyle = css("--gap");
      for (const g of s.gaps) c.fillRect(X(g[0]), y0, Math.max(X(g[1]) - X(g[0]), 1), SH - 1);
      c.strokeStyle = css("--line"); c.lineWidth = 1;
      c.beginPath(); c.moveTo(0, top + h + 0.5); c.lineTo(W, top + h + 0.5); c.stroke();
      const lines = [st, ...(st.also ? [st.also] : [])];
      let label = "";
      for (const l of lines) {
        const [n, last, lastT] = line(c, s, l.vals, X, top, h, st.hi, l.color);
        if (l.name === "cpu") { drawn.points = n; drawn.lastT = lastT; }
        drawn.last[l.name] = last;
        label += `${l.name} ${last === null || endsDown(s) ? "–" : st.fmt(last)}  `;
      }
      c.fillStyle = css("--muted");
      c.textAlign = "left"; c.fillText(label, 2, y0 + 1);
      c.textAlign = "right"; c.fillText("max " + st.fmt(st.hi), W - 2, y0 + 1);
    });
    c.fillStyle = css("--muted");
    for (const [text, f] of ticks) {
      c.textAlign = f === 0 ? "left" : f === 1 ? "right" : "center";
      c.fillText(text, f * W, 4 * SH + 1);
    }
    cv.dataset.points = drawn.points; cv.dataset.lastCpu = drawn.last.cpu ?? "";
    return drawn;
  }
  function endsDown(s) { return s.gaps.length > 0 && s.gaps[s.gaps.length - 1][1] >= s.to; }
  // line strokes one figure, a new stroke after each gap; it returns the
  // points it drew inside the chart, the last value (or null) and its time.
  function line(c, s, vals, X, top, h, hi, color) {
    c.strokeStyle = color; c.lineWidth = 1.5; c.beginPath();
    let gi = 0, last = null, lastT = 0, n = 0;
    for (let i = 0; i < s.t.length; i++) {
      let broken = i === 0;
      while (gi < s.gaps.length && s.gaps[gi][1] <= s.t[i]) { broken = true; gi++; }
      const x = X(s.t[i]), y = top + h - Math.min(Math.max(vals[i] / hi, 0), 1) * h;
      if (broken) { c.moveTo(x, y); c.rect(x - 0.5, y - 0.5, 1, 1); } else c.lineTo(x, y);
      if (x >= 0 && x <= c.canvas.width) { n++; last = vals[i]; lastT = s.t[i]; }
    }
    c.stroke();
    return [n, last, lastT];
  }
  $("close").onclick = () => { hist = null; $("detail").hidden = true; selected = -1; clearTimeout(detailTimer); draw(); };

  for (const b of document.querySelectorAll("#figures button")) {
    b.onclick = () => {
      figure = +b.dataset.fig;
      for (const o of document.querySelectorAll("#figures button")) o.classList.toggle("on", o === b);
      draw();
    };
  }
  $("sort").onchange = (e) => { order = +e.target.value; dirty = true; draw(); };
  $("filter").oninput = (e) => { query = e.target.value; dirty = true; draw(); };
  const root = document.documentElement;
  const dark = localStorage.getItem("beostatus-theme") ?? (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
  root.classList.toggle("dark", dark === "dark");
  $("theme").onclick = () => {
    const d = root.classList.toggle("dark");
    localStorage.setItem("beostatus-theme", d ? "dark" : "light");
    colours = null;
    draw();
    if (hist && !$("detail").hidden) drawCharts();
  };
  new ResizeObserver(([e]) => {
    roomW = e.target.clientWidth; roomH = e.target.clientHeight;
    draw();
  }).observe($("gridwrap"));
  roomW = $("gridwrap").clientWidth; roomH = $("gridwrap").clientHeight;

  // For tests and benchmarks: what was drawn where, and the update costs.
  window.beostatus = {
    stats,
    tiles: () => layout.map((r, i) => ({ node: r[NODE], state: STATES[r[STATE]], x: (i % cols) * tile + tile / 2, y: Math.floor(i / cols) * tile + tile / 2 })),
    nodeCount: () => nodes.size,
    charts: () => charts,
  };
  connect();
})();
