// Time-series panels on uPlot (served from /static/vendor): x is the optimizer step (or,
// in the run comparison, the epoch).
// Each panel draws dashed vertical markers for LR changes, restarts and checkpoints,
// and a Grafana-like tooltip with every series' value at the hovered step.

export const MARKER_COLORS = {lr_change: "#f2495c", restart: "#b877d9", checkpoint: "#8e8e9e66"};
const MARKER_NAMES = {lr_change: "LR change", restart: "restart", checkpoint: "checkpoint"};
const GRID = {stroke: "#2c3235", width: 1};
const AXIS = {stroke: "#8e8e9e", grid: GRID, ticks: GRID, font: "11px Inter, Arial, sans-serif"};

// A log axis that spans whole decades, with a grid line at each power of ten and nowhere
// else: uPlot's own log splits add a line at every 2..9 multiple, a wall of lines for a
// learning rate that only ever moves by factors of 10. The data never touches the edges.
const EPS = 1e-9;  // log10 of an exact power of ten may come out a hair off the integer
function decadeRange(u, min, max) {
  if (!(min > 0) || !(max > 0)) return [1e-4, 1e-1];
  return [10 ** (Math.ceil(Math.log10(min) - EPS) - 1), 10 ** (Math.floor(Math.log10(max) + EPS) + 1)];
}
function decadeSplits(u, axisIdx, min, max) {
  const splits = [];
  for (let e = Math.round(Math.log10(min)); 10 ** e <= max * (1 + EPS); e++) splits.push(10 ** e);
  return splits;
}

// A fraction (an error rate) never leaves [0, 1]: uPlot's own padding around one point
// would show an axis from 0% to 150%.
function fractionRange(u, min, max) {
  if (min == null || max == null) return [0, 1];
  const pad = Math.max(0.02, 0.1 * (max - min));
  return [Math.max(0, min - pad), Math.min(1, max + pad)];
}

export class TimeChart {
  // series: [{label, color, fmt, scale, stepped, points}]
  // opts: {log, fraction (y is in [0, 1]), yFmt(value, tickIncrement), y2Fmt,
  //        xName (what x is: "step", the default, or "epoch")}
  constructor(el, series, opts = {}) {
    this.el = el;
    this.series = series;
    this.markers = [];
    this.stepsPerEpoch = null;
    this.xName = opts.xName || "step";
    this.points = 0;
    this.note = Object.assign(document.createElement("div"), {className: "empty-note", textContent: "no data yet"});
    el.appendChild(this.note);
    const scales = {x: {time: false},
                    y: opts.log ? {distr: 3, log: 10, range: decadeRange} : opts.fraction ? {range: fractionRange} : {}};
    const axes = [{...AXIS}, {...AXIS, size: 60, values: (u, ticks, i, space, incr) => ticks.map(v => (opts.yFmt || String)(v, incr)),
                              ...(opts.log ? {splits: decadeSplits} : {})}];
    if (series.some(s => s.scale === "y2")) {
      scales.y2 = {range: [0, 1]};
      axes.push({...AXIS, scale: "y2", side: 1, grid: {show: false}, size: 50,
                 values: (u, ticks, i, space, incr) => ticks.map(v => (opts.y2Fmt || String)(v, incr))});
    }
    this.u = new uPlot({
      width: Math.max(200, el.clientWidth), height: this.height(),
      scales, axes,
      cursor: {points: {size: 6}, drag: {x: true, y: false}},
      legend: {show: true, live: false},
      series: [{label: this.xName}, ...series.map(s => ({
        label: s.label, stroke: s.color, width: 1.5, scale: s.scale || "y", spanGaps: true,
        // The LR is piecewise constant: a stepped line shows the drop at its step.
        ...(s.stepped ? {paths: uPlot.paths.stepped({align: 1})} : {}),
        points: {show: s.points || false, size: 5, fill: s.color}}))],
      plugins: [this.markerPlugin(), this.tooltipPlugin()],
    }, [[], ...series.map(() => [])], el);
    this.resize = new ResizeObserver(() => this.u.setSize({width: Math.max(200, el.clientWidth), height: this.height()}));
    this.resize.observe(el);
  }

  destroy() {
    this.resize.disconnect();
    this.u.destroy();
    this.note.remove();
  }

  height() { return window.innerWidth < 600 ? 200 : 240; }

  // columns: one {steps, values} per series, each with its own steps; uPlot.join aligns them.
  setData(columns) {
    const data = uPlot.join(columns.map(c => [c.steps, c.values]));
    this.points = data[0].length;
    this.note.style.display = this.points ? "none" : "flex";
    this.el.dataset.points = String(this.points);
    this.u.setData(data);
  }

  setMarkers(markers) {
    this.markers = markers;
    this.u.redraw(false, false);
  }

  markerPlugin() {
    const chart = this;
    return {hooks: {draw: [u => {
      const {left, top, width, height} = u.bbox, ctx = u.ctx;
      ctx.save();
      ctx.lineWidth = Math.max(1, devicePixelRatio);
      ctx.setLineDash([5 * devicePixelRatio, 4 * devicePixelRatio]);
      for (const m of chart.markers) {
        const x = Math.round(u.valToPos(m.step, "x", true));
        if (x < left || x > left + width) continue;
        ctx.strokeStyle = MARKER_COLORS[m.kind] || "#8e8e9e";
        ctx.beginPath();
        ctx.moveTo(x, top);
        ctx.lineTo(x, top + height);
        ctx.stroke();
      }
      ctx.restore();
    }]}};
  }

  tooltipPlugin() {
    const chart = this;
    let tip;
    return {hooks: {
      init: [u => {
        tip = Object.assign(document.createElement("div"), {className: "tooltip"});
        u.over.appendChild(tip);
        u.over.addEventListener("mouseleave", () => { tip.style.display = "none"; });
      }],
      setCursor: [u => {
        const {left, top, idx} = u.cursor;
        if (idx == null || left < 0) { tip.style.display = "none"; return; }
        const step = u.data[0][idx];
        const epoch = chart.stepsPerEpoch ? ` · epoch ${(step / chart.stepsPerEpoch).toFixed(2)}` : "";
        // Built as nodes with text, never as HTML: labels are run names and marker texts
        // come from the run store.
        const head = line();
        head.append(Object.assign(document.createElement("b"), {textContent: `${chart.xName} ${+step.toFixed(2)}`}), epoch);
        const rows = [head];
        chart.series.forEach((s, i) => {
          const v = nearestValue(u.data[i + 1], idx);
          const swatch = Object.assign(document.createElement("span"), {className: "sw"});
          swatch.style.background = s.color;
          const row = line();
          row.append(swatch, `${s.label}: ${v == null ? "–" : (s.fmt || String)(v)}`);
          rows.push(row);
        });
        const px = u.posToVal(left + 6, "x") - u.posToVal(left, "x");
        for (const m of chart.markers) {
          if (Math.abs(m.step - step) > Math.abs(px)) continue;
          const row = line(`⏐ ${MARKER_NAMES[m.kind]}${m.text ? ": " + m.text : ""}`);
          row.style.color = MARKER_COLORS[m.kind];
          rows.push(row);
        }
        tip.replaceChildren(...rows);
        tip.style.display = "block";
        const flip = left > u.over.clientWidth / 2;
        tip.style.left = flip ? "" : `${left + 12}px`;
        tip.style.right = flip ? `${u.over.clientWidth - left + 12}px` : "";
        tip.style.top = `${Math.max(0, top - 10)}px`;
      }],
    }};
  }
}

function line(text = "") {
  return Object.assign(document.createElement("div"), {textContent: text});
}

// The joined table has nulls where a series has no row at that step: show the nearest one.
function nearestValue(col, idx) {
  for (let d = 0; d < 50; d++) {
    if (col[idx - d] != null) return col[idx - d];
    if (col[idx + d] != null) return col[idx + d];
  }
  return null;
}
