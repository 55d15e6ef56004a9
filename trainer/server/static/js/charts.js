import {esc} from "./format.js";

// Time-series panels on uPlot (served from /static/vendor): x is the optimizer step.
// Each panel draws dashed vertical markers for LR changes, restarts and checkpoints,
// and a Grafana-like tooltip with every series' value at the hovered step.

export const MARKER_COLORS = {lr_change: "#f2495c", restart: "#b877d9", checkpoint: "#8e8e9e66"};
const MARKER_NAMES = {lr_change: "LR change", restart: "restart", checkpoint: "checkpoint"};
const GRID = {stroke: "#2c3235", width: 1};
const AXIS = {stroke: "#8e8e9e", grid: GRID, ticks: GRID, font: "11px Inter, Arial, sans-serif"};

export class TimeChart {
  // series: [{label, color, fmt, scale}] ; opts: {log, yFmt, y2Fmt}
  constructor(el, series, opts = {}) {
    this.el = el;
    this.series = series;
    this.markers = [];
    this.stepsPerEpoch = null;
    this.points = 0;
    this.note = Object.assign(document.createElement("div"), {className: "empty-note", textContent: "no data yet"});
    el.appendChild(this.note);
    const scales = {x: {time: false}, y: opts.log ? {distr: 3, log: 10} : {}};
    const axes = [{...AXIS}, {...AXIS, size: opts.log ? 76 : 60, values: (u, ticks) => ticks.map(opts.yFmt || String)}];
    if (series.some(s => s.scale === "y2")) {
      scales.y2 = {range: [0, 1]};
      axes.push({...AXIS, scale: "y2", side: 1, grid: {show: false}, size: 50,
                 values: (u, ticks) => ticks.map(opts.y2Fmt || String)});
    }
    this.u = new uPlot({
      width: Math.max(200, el.clientWidth), height: this.height(),
      scales, axes,
      cursor: {points: {size: 6}, drag: {x: true, y: false}},
      legend: {show: true, live: false},
      series: [{label: "step"}, ...series.map(s => ({
        label: s.label, stroke: s.color, width: 1.5, scale: s.scale || "y", spanGaps: true,
        // The LR is piecewise constant: a stepped line shows the drop at its step.
        ...(s.stepped ? {paths: uPlot.paths.stepped({align: 1})} : {}),
        points: {show: s.points || false, size: 5, fill: s.color}}))],
      plugins: [this.markerPlugin(), this.tooltipPlugin()],
    }, [[], ...series.map(() => [])], el);
    new ResizeObserver(() => this.u.setSize({width: Math.max(200, el.clientWidth), height: this.height()})).observe(el);
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
        const rows = [`<b>step ${step}</b>${epoch}`];
        chart.series.forEach((s, i) => {
          const v = nearestValue(u.data[i + 1], idx);
          rows.push(`<span class="sw" style="background:${s.color}"></span>${s.label}: ${v == null ? "–" : (s.fmt || String)(v)}`);
        });
        const px = u.posToVal(left + 6, "x") - u.posToVal(left, "x");
        for (const m of chart.markers) {
          if (Math.abs(m.step - step) <= Math.abs(px)) rows.push(`<span style="color:${MARKER_COLORS[m.kind]}">⏐ ${MARKER_NAMES[m.kind]}${m.text ? ": " + esc(m.text) : ""}</span>`);
        }
        tip.innerHTML = rows.join("<br>");
        tip.style.display = "block";
        const flip = left > u.over.clientWidth / 2;
        tip.style.left = flip ? "" : `${left + 12}px`;
        tip.style.right = flip ? `${u.over.clientWidth - left + 12}px` : "";
        tip.style.top = `${Math.max(0, top - 10)}px`;
      }],
    }};
  }
}

// The joined table has nulls where a series has no row at that step: show the nearest one.
function nearestValue(col, idx) {
  for (let d = 0; d < 50; d++) {
    if (col[idx - d] != null) return col[idx - d];
    if (col[idx + d] != null) return col[idx + d];
  }
  return null;
}
