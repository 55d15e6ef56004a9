// The run comparison panel: the validation error of several runs on one chart, as W&B and
// TensorBoard overlay runs (the paper's ablations, a run and its fine-tuned child). x is
// the epoch, not the step: runs with other batch sizes or a child that restarted its step
// count line up by epoch. The selection is in the URL (#compare=1,2&metric=val_top5_error),
// so a link reproduces the view.
import {TimeChart} from "./charts.js";
import * as fmt from "./format.js";
import {idList, readHash, updateHash} from "./hashstate.js";
import {treeOrder} from "./runtree.js";

const PALETTE = ["#ff9830", "#5794f2", "#73bf69", "#b877d9", "#fade2a", "#f2495c", "#8ab8ff", "#ffb357"];
const METRICS = new Set(["val_top1_error", "val_top5_error"]);  // the options of #compare-metric
const DEFAULT_METRIC = "val_top1_error";
const $ = id => document.getElementById(id);

export class Comparison {
  constructor(getJSON) {
    this.getJSON = getJSON;
    this.runs = [];
    this.runsKey = null;
    this.chart = null;
    this.chartKey = "";
    this.readUrl();
    $("compare-metric").addEventListener("change", ev => {
      this.metric = ev.target.value;
      this.changed();
    });
    // By step: a fork continues its parent's step count, so it overlays the parent from
    // the fork point either way; by epoch also lines up runs with other batch sizes.
    $("compare-x").addEventListener("change", ev => {
      this.x = ev.target.value;
      this.changed();
    });
    $("compare-runs").addEventListener("change", ev => {
      const id = Number(ev.target.value);
      this.selected = ev.target.checked ? [...this.selected, id] : this.selected.filter(s => s !== id);
      this.changed();
    });
  }

  // The view the URL names; called at start and when the operator edits or pastes a link.
  readUrl() {
    const hash = readHash();
    this.selected = idList(hash.get("compare"));
    this.metric = METRICS.has(hash.get("metric")) ? hash.get("metric") : DEFAULT_METRIC;
    $("compare-metric").value = this.metric;
    this.x = hash.get("x") === "step" ? "step" : "epoch";
    $("compare-x").value = this.x;
    this.renderList();
  }

  changed() {
    updateHash({compare: this.selected.join(","), metric: this.metric === DEFAULT_METRIC ? null : this.metric,
                x: this.x === "step" ? "step" : null});
    this.renderList();
    this.refresh().catch(() => {});  // the page's refresh loop shows the banner and retries
  }

  setRuns(runs) {
    const key = runs.map(r => `${r.id}:${r.name}:${r.status}:${r.parent_id}`).join("|");
    if (key === this.runsKey) return;  // unchanged: keep the list (and the operator's focus)
    this.runs = runs;
    this.runsKey = key;
    this.renderList();
  }

  color(id) {
    return PALETTE[this.selected.indexOf(id) % PALETTE.length];
  }

  renderList() {
    const rows = treeOrder(this.runs).map(({run: r, depth}) => {
      const box = Object.assign(document.createElement("input"), {type: "checkbox", value: String(r.id)});
      box.checked = this.selected.includes(r.id);
      const swatch = Object.assign(document.createElement("span"), {className: "sw"});
      if (box.checked) swatch.style.background = this.color(r.id);
      const label = document.createElement("label");
      const fork = r.forked_at_step != null ? `, forked at step ${r.forked_at_step}` : "";
      label.append(box, swatch, document.createTextNode(`${r.name} (#${r.id}, ${r.status}${fork})`));  // text: names are data
      label.dataset.depth = String(depth);
      label.style.paddingLeft = `${depth * 16}px`;
      return label;
    });
    $("compare-runs").replaceChildren(...rows);
  }

  async refresh() {
    const known = new Map(this.runs.map(r => [r.id, r]));
    const shown = this.selected.filter(id => known.has(id));
    $("compare-note").hidden = shown.length >= 2;
    const el = $("chart-compare");
    const key = `${this.metric}:${this.x}:${shown.join(",")}`;
    if (key !== this.chartKey) {
      // uPlot's series are fixed at creation: a new selection is a new chart.
      this.chart?.destroy();
      this.chart = null;
      this.chartKey = key;
      el.hidden = shown.length === 0;
      el.dataset.series = String(shown.length);
      el.dataset.points = "0";
      if (shown.length) {
        this.chart = new TimeChart(el, shown.map(id => ({
          label: known.get(id).name, color: this.color(id), fmt: fmt.pct, points: true})),
          {xName: this.x, yFmt: fmt.pctTick, fraction: true});
      }
    }
    if (!this.chart) return;
    const chart = this.chart;
    const columns = await Promise.all(shown.map(async id => {
      const s = await this.getJSON(`/api/runs/${id}/metrics/${this.metric}?max_points=1000`);
      return {steps: this.x === "step" ? s.steps : s.epochs, values: s.values};
    }));
    if (chart === this.chart) chart.setData(columns);  // else the selection changed meanwhile
  }
}
