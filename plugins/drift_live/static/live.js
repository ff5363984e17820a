// The drift live view: rows and state arrive as server-sent events (/events); plots are plotly.js, served by the
// page's own server from the installed plotly package.  window.driftLive holds what the page knows (tests read it).
"use strict";

const $ = (id) => document.getElementById(id);
const live = { meta: null, rows: [], state: null, frameVersion: 0, draws: 0 };
window.driftLive = live;

// distinct styles: the drift the specimen made, what the actuator did about it, what was left
const STYLE = {
  drift: { name: "uncorrected drift (measured)", line: { color: "rgba(127,127,127,0.4)", width: 9 } },  // a band the correction runs inside
  correction: { name: "correction (field of view moved)", line: { color: "#1f77b4", width: 2 } },
  residual: { name: "residual (measured)", mode: "markers", marker: { color: "#d62728", size: 4 } },
  trueDrift: { name: "uncorrected drift (truth)", line: { color: "#000000", dash: "dot", width: 1 } },
  trueResidual: { name: "residual (truth)", line: { color: "#ff7f0e", width: 1 } },
};
const STATUS_COLOURS = {
  reference: "#1f77b4", corrected: "#2ca02c", measured: "#17becf", "low-confidence": "#ff7f0e",
  "bad-frame": "#d62728", held: "#bcbd22", frame: "#9467bd",
};

const frameRows = () => live.rows.filter((r) => !r.region);
const column = (rows, name, k) => rows.map((r) => (r[name] == null ? null : k === undefined ? r[name] : r[name][k]));
const add = (a, b) => a.map((v, i) => (v == null || b[i] == null ? null : v + b[i]));
const scale = (a, f) => a.map((v) => (v == null ? null : v * f));
const known = (a) => a.some((v) => v != null);

function drawTrace() {
  const rows = frameRows();
  const px = live.meta.pixel_size_nm;
  const f = px || 1;
  const unit = px ? "nm" : "px";
  const x = column(rows, "index");
  const data = [];
  ["y", "x"].forEach((axis, k) => {
    const yaxis = k === 0 ? "y" : "y2";
    const offset = column(rows, "offset", k);
    const fov = column(rows, "fov", k);
    const series = [
      ["drift", add(offset, fov)], ["correction", fov], ["residual", offset],
      ["trueDrift", column(rows, "true_drift", k)], ["trueResidual", column(rows, "true_offset", k)],
    ];
    for (const [key, values] of series) {
      if (key.startsWith("true") && !known(values)) continue;
      data.push({
        type: "scatter", mode: "lines", x, y: scale(values, f), yaxis, legendgroup: key, showlegend: k === 0,
        hovertemplate: `%{y:.3f} ${unit}` + (px ? " (%{customdata:.2f} px)" : "") + `<extra>${STYLE[key].name}</extra>`,
        customdata: values, ...STYLE[key],
      });
    }
  });
  const layout = {
    title: { text: `drift, ${unit}` + (px ? " (right axis: px)" : ""), font: { size: 14 } },
    margin: { t: 40, r: 60, l: 60, b: 80 }, legend: { orientation: "h", y: -0.22 },
    xaxis: { anchor: "y2", title: { text: "frame" } },
    yaxis: { domain: [0.55, 1], title: { text: `dy (${unit})` } },
    yaxis2: { domain: [0, 0.45], title: { text: `dx (${unit})` } },
  };
  if (px) {  // px on the right: an axis overlaying each nm axis, given the same range divided by the pixel size
    const ranges = [0, 1].map((k) => {
      const all = data.filter((d) => d.yaxis === (k ? "y2" : "y")).flatMap((d) => d.y).filter((v) => v != null);
      const lo = Math.min(...all, 0), hi = Math.max(...all, 0), pad = 0.05 * (hi - lo || 1);
      return [lo - pad, hi + pad];
    });
    layout.yaxis.range = ranges[0];
    layout.yaxis2.range = ranges[1];
    layout.yaxis3 = { overlaying: "y", side: "right", range: ranges[0].map((v) => v / px), title: { text: "px" }, showgrid: false };
    layout.yaxis4 = { overlaying: "y2", side: "right", range: ranges[1].map((v) => v / px), title: { text: "px" }, showgrid: false };
    data.push({ type: "scatter", x: [], y: [], yaxis: "y3", showlegend: false, hoverinfo: "skip" },
              { type: "scatter", x: [], y: [], yaxis: "y4", showlegend: false, hoverinfo: "skip" });
  }
  Plotly.react("trace", data, layout, { displaylogo: false, responsive: true });
}

function drawQuality() {
  const rows = live.rows;
  const x = column(rows, "index");
  const m = live.meta;
  const data = [
    { type: "scatter", mode: "lines+markers", name: "confidence", x, y: column(rows, "confidence"),
      line: { color: "#2ca02c", width: 1 }, marker: { size: 3 } },
    { type: "scatter", mode: "lines+markers", name: "sigma (px)", x, y: column(rows, "sigma"), yaxis: "y2",
      line: { color: "#9467bd", width: 1 }, marker: { size: 3 } },
  ];
  const threshold = (yref, y, text) => ({
    shape: { type: "line", xref: "paper", x0: 0, x1: 1, yref, y0: y, y1: y, line: { color: "#d62728", dash: "dash", width: 1.5 } },
    note: { xref: "paper", x: 1, xanchor: "right", yref, y, yanchor: "bottom", text, showarrow: false, font: { size: 11, color: "#d62728" } },
  });
  const lines = [threshold("y", m.min_confidence, `gate: confidence ≥ ${m.min_confidence}`),
                 threshold("y2", m.max_sigma_px, `gate: sigma ≤ ${m.max_sigma_px} px`)];
  const layout = {
    title: { text: "confidence and uncertainty (estimates beyond the dashed gates never move the microscope)", font: { size: 14 } },
    margin: { t: 40, r: 20, l: 60, b: 70 }, legend: { orientation: "h", y: -0.25 },
    xaxis: { anchor: "y2", title: { text: "frame" } },
    yaxis: { domain: [0.55, 1], range: [-0.05, 1.05], title: { text: "confidence" } },
    yaxis2: { domain: [0, 0.45], type: "log", title: { text: "sigma (px)" } },
    shapes: lines.map((l) => l.shape), annotations: lines.map((l) => l.note),
  };
  Plotly.react("quality", data, layout, { displaylogo: false, responsive: true });
}

function drawTimeline() {
  const labels = live.meta.status_labels;
  const names = Object.values(labels);
  const status = column(live.rows, "status").map((s) => labels[s]);
  const data = names.filter((n) => status.includes(n)).map((n) => ({
    type: "scatter", mode: "markers", name: n, x: live.rows.filter((r, i) => status[i] === n).map((r) => r.index),
    y: status.filter((s) => s === n), marker: { color: STATUS_COLOURS[n] || "#333", size: 6, symbol: "square" },
  }));
  const layout = {
    title: { text: "what each step did", font: { size: 14 } }, showlegend: false,
    margin: { t: 30, r: 20, l: 100, b: 30 },
    yaxis: { type: "category", categoryorder: "array", categoryarray: names },
  };
  Plotly.react("timeline", data, layout, { displaylogo: false, responsive: true });
}

// the new image replaces the shown one once it has loaded: the page never shows an empty frame
function swapImage(id, url) {
  const next = new Image();
  next.onload = () => {
    const shown = $(id);
    next.id = id;
    next.alt = shown.alt;
    shown.replaceWith(next);
  };
  next.src = url;
}

function showState(state) {
  live.state = state;
  const badge = $("state");
  const word = state.finished ? state.state : state.paused ? "paused" : state.state;
  badge.textContent = state.paused && !state.finished ? `paused: ${state.paused}` : word;
  badge.className = `badge ${word}`;
  $("steps").textContent = state.n;
  $("fps").textContent = state.frames_per_s ? state.frames_per_s.toFixed(2) : "–";
  $("averaged").textContent = state.averaged;
  if (state.finished) {
    $("notice").hidden = false;
    $("notice").textContent = `run ended: ${state.stop_reason}`;
  }
  const controls = live.meta.controls && !state.finished;
  $("pause").disabled = !controls || Boolean(state.paused);
  $("resume").disabled = !controls || !state.paused;
  $("stop").disabled = !controls;
  if (state.frame_version !== live.frameVersion && state.frame_version > 0) {
    live.frameVersion = state.frame_version;
    swapImage("frame", `/frame.png?v=${state.frame_version}`);
    if (state.averaged > 0) swapImage("average", `/average.png?v=${state.frame_version}`);
    const last = frameRows().at(-1);
    $("frame-index").textContent = last ? `(frame ${last.index})` : "";
  }
}

function draw() {
  drawTrace();
  drawQuality();
  drawTimeline();
  live.draws += 1;
}

async function control(action) {
  const response = await fetch(`/control/${action}`, { method: "POST" });
  $("notice").hidden = false;
  $("notice").textContent = response.ok ? `${action}: sent` : `${action}: ${response.status} ${await response.text()}`;
}

function connect() {
  const events = new EventSource("/events");
  events.addEventListener("meta", (e) => {
    live.meta = JSON.parse(e.data);
    live.rows = [];
    const m = live.meta;
    $("name").textContent = m.name;
    document.title = `drift: ${m.name}`;
    $("source").textContent = m.source;
    $("chain").textContent = `pipeline ${m.pipeline} · controller ${m.controller} · actuator ${m.actuator} · ` +
      `gates: confidence ≥ ${m.min_confidence}, sigma ≤ ${m.max_sigma_px} px` +
      (m.pixel_size_nm ? ` · ${m.pixel_size_nm} nm/px` : "");
    if (!m.controls) {
      $("notice").hidden = false;
      $("notice").textContent = "view only: this page reads a run file, so it cannot pause or stop the run";
    }
  });
  let pending = false;
  events.addEventListener("update", (e) => {
    const update = JSON.parse(e.data);
    live.rows.push(...update.rows);
    showState(update.state);
    if (update.rows.length && !pending) {  // at most one redraw per 200 ms, however fast rows come
      pending = true;
      setTimeout(() => { pending = false; draw(); }, 200);
    }
    if (update.state.finished) events.close();
  });
  events.onerror = () => {
    if (live.state && live.state.finished) return;
    $("state").textContent = "disconnected (retrying)";
    $("state").className = "badge";
  };
}

for (const action of ["pause", "resume", "stop"]) $(action).addEventListener("click", () => control(action));
connect();
