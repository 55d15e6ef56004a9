// The progress page: stat panels, time-series panels, events, the conv1 kernels and the
// run comparison, refreshed every few seconds without reloading (only new rows are fetched).
import {TimeChart} from "./charts.js";
import {initAdvice, refreshAdvice} from "./advice.js";
import {Comparison} from "./compare.js";
import {initDivide} from "./divide.js";
import * as fmt from "./format.js";
import {readHash, updateHash} from "./hashstate.js";
import {treeLabel, treeOrder} from "./runtree.js";

const MAX_POINTS = 1000;
const METRICS = ["train_loss", "val_top1_error", "val_top5_error", "lr", "images_per_sec", "data_wait_frac"];
const MARKER_KINDS = new Set(["lr_change", "restart", "checkpoint"]);
const $ = id => document.getElementById(id);

let refreshMs = 3000;
let state = freshState(null);
let charts = {};
let comparison = null;

function freshState(runId) {
  // filtersUrl undefined, not null: the first render of a run always sets the conv1 panel.
  return {runId, run: null, series: {}, events: [], markers: [], lastEventId: 0, filtersUrl: undefined};
}

async function getJSON(url) {
  const r = await fetch(url, {cache: "no-store"});
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

function makeCharts() {
  const green = "#73bf69", blue = "#5794f2", yellow = "#fade2a", orange = "#ff9830";
  charts = {
    loss: new TimeChart($("chart-loss"), [{label: "train loss", color: green, fmt: v => v.toFixed(3)}],
                        {yFmt: v => v.toFixed(2)}),
    val: new TimeChart($("chart-val"), [
      {label: "top-1 error", color: orange, fmt: fmt.pct, points: true},
      {label: "top-5 error", color: yellow, fmt: fmt.pct, points: true}], {yFmt: fmt.pctTick, fraction: true}),
    lr: new TimeChart($("chart-lr"), [{label: "learning rate", color: blue, fmt: fmt.lr, stepped: true}],
                      {log: true, yFmt: fmt.decade}),
    ips: new TimeChart($("chart-ips"), [
      {label: "images/s", color: green, fmt: v => fmt.num(v, 0)},
      {label: "data wait", color: "#b877d9", fmt: fmt.pct, scale: "y2"}], {yFmt: v => fmt.num(v), y2Fmt: fmt.pctTick}),
  };
}

// -- runs --------------------------------------------------------------------------------
async function loadRuns() {
  const runs = await getJSON("/api/runs");
  const select = $("run-select"), chosen = state.runId;
  select.replaceChildren(...treeOrder(runs).map(({run: r, depth}) =>
    new Option(`${treeLabel(r, depth)} (#${r.id}, ${r.status})`, r.id)));
  if (chosen != null) select.value = String(chosen);
  comparison.setRuns(runs);
  return runs;
}

function runFromHash() {
  const id = readHash().get("run");
  return /^\d{1,15}$/.test(id || "") ? Number(id) : null;
}

async function pickRun() {
  const runs = await loadRuns();
  let id = runFromHash();
  if (id == null || !runs.some(r => r.id === id)) {
    const current = await getJSON("/api/runs/current").catch(() => null);
    id = current ? current.id : null;
  }
  selectRun(id);
}

function selectRun(id) {
  state = freshState(id);
  if (id != null) {
    $("run-select").value = String(id);
    updateHash({run: id});
  }
  Object.values(charts).forEach(c => { c.setMarkers([]); c.setData(c.series.map(() => ({steps: [], values: []}))); });
  $("events").tBodies[0].replaceChildren();
}

// -- data --------------------------------------------------------------------------------
async function refreshSeries(st) {
  await Promise.all(METRICS.map(async name => {
    let s = st.series[name];
    if (!s || s.steps.length > 2 * MAX_POINTS) s = st.series[name] = {steps: [], values: []};
    const since = s.steps.length ? s.steps[s.steps.length - 1] + 1 : 0;
    const d = await getJSON(`/api/runs/${st.runId}/metrics/${name}?since_step=${since}&max_points=${MAX_POINTS}`);
    s.steps.push(...d.steps);
    s.values.push(...d.values);
  }));
}

async function refreshEvents(st) {
  for (let i = 0; i < 20; i++) {
    const batch = await getJSON(`/api/runs/${st.runId}/events?since_id=${st.lastEventId}&limit=1000`);
    if (!batch.length) break;
    st.lastEventId = batch[batch.length - 1].id;
    st.events = st.events.concat(batch).slice(-200);
    for (const e of batch) {
      if (!MARKER_KINDS.has(e.kind) || e.step == null) continue;
      st.markers.push({step: e.step, kind: e.kind, text: markerText(e)});
      // A resumed run re-does steps: fetch the series again from the start.
      if (e.kind === "restart") st.series = {};
    }
    if (batch.length < 1000) break;
  }
}

function markerText(e) {
  const p = e.payload || {};
  if (e.kind === "lr_change") {
    const from = p.old_lr ?? p.old, to = p.new_lr ?? p.new ?? p.lr;
    return from != null && to != null ? `${fmt.lr(from)} → ${fmt.lr(to)}` : "";
  }
  if (e.kind === "checkpoint") return p.epoch != null ? `epoch ${p.epoch}` : "";
  return "";
}

// -- rendering ---------------------------------------------------------------------------
function stat(id, value, sub = "", tone = "") {
  const el = $(id);
  el.querySelector(".value").textContent = value;
  el.querySelector(".sub").textContent = sub;
  el.dataset.tone = tone;
}

function renderStats(run) {
  const tones = {running: "", finished: "info", stopped: "warn", failed: "bad", interrupted: "bad"};
  stat("stat-status", run.status, `updated ${fmt.ago(run.updated_at)}`, tones[run.status] ?? "warn");
  const epochs = run.epochs != null ? ` / ${run.epochs}` : "";
  stat("stat-epoch", `${Math.floor(run.epoch)}${epochs}`, `${run.epoch.toFixed(2)} epochs done`);
  stat("stat-step", fmt.int(run.step), run.steps_per_epoch ? `${fmt.int(run.steps_per_epoch)} per epoch` : "");
  stat("stat-lr", fmt.lr(run.lr), run.pending_commands ? `${run.pending_commands} division pending` : "");
  stat("stat-top1", fmt.pct(run.best_val_top1_error), `last ${fmt.pct(run.last_val_top1_error)}`);
  stat("stat-top5", fmt.pct(run.best_val_top5_error), `last ${fmt.pct(run.last_val_top5_error)}`);
  if (run.compiling_s != null) {  // the first step waits for torch.compile: not stuck
    stat("stat-ips", `compiling, ${Math.round(run.compiling_s)} s`, "the first step waits for torch.compile");
  } else {
    stat("stat-ips", fmt.num(run.images_per_sec), `data wait ${fmt.pct(run.data_wait_frac)}`,
         run.data_wait_frac > 0.2 ? "warn" : "");
  }
  stat("stat-eta", run.status === "running" ? fmt.duration(run.eta_s) : fmt.dash,
       `${fmt.num(run.images_seen)} images seen`);
  $("demo-badge").hidden = !run.demo;
  const from = run.config?.init_from;
  $("init-badge").hidden = !from;
  $("init-badge").textContent = from ? `fine-tuned from ${from}` : "";
  const recipe = notThePapers(run.config || {});
  $("recipe-badge").hidden = !recipe.length;
  $("recipe-badge").textContent = recipe.length ? `not the paper's: ${recipe.join("; ")}` : "";
  $("divide-button").disabled = run.status !== "running";
  document.title = `${run.name} · ${run.status} · AlexNet training`;
}

// Large-batch choices a run made on purpose (trainer.run.lrscaling, --grad-bf16): said
// beside the run, so its curves are never read as the paper's recipe.
function notThePapers(c) {
  const out = [];
  if (c.lr_scaling === "linear") {
    const warm = c.warmup_epochs ? `, warm-up ${c.warmup_epochs} epochs` : "";
    out.push(`LR ${fmt.lr(c.lr * c.batch_size / 128)} = ${fmt.lr(c.lr)} × ${c.batch_size}/128${warm}`);
  }
  if (c.grad_bf16) out.push("gradients all-reduced in bf16");
  return out;
}

function renderCharts(run) {
  const col = name => state.series[name] || {steps: [], values: []};
  charts.loss.setData([col("train_loss")]);
  charts.val.setData([col("val_top1_error"), col("val_top5_error")]);
  charts.lr.setData([col("lr")]);
  charts.ips.setData([col("images_per_sec"), col("data_wait_frac")]);
  for (const c of Object.values(charts)) {
    c.stepsPerEpoch = run.steps_per_epoch;
    c.setMarkers(state.markers);
  }
}

function renderEvents() {
  const runDir = state.run?.config?.run_dir;
  const shown = v => typeof v === "object" ? JSON.stringify(v) : fmt.runRelative(v, runDir);
  const rows = state.events.slice(-50).reverse().map(e => {
    const tr = document.createElement("tr");
    const detail = Object.entries(e.payload || {}).map(([k, v]) => `${k}=${shown(v)}`).join(" ");
    for (const [text, cls] of [[e.step ?? fmt.dash, ""], [fmt.clock(e.wall), ""], [e.kind, ""], [detail, "detail"]]) {
      const td = document.createElement("td");
      td.textContent = text;  // textContent: payloads hold operators' free text
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    tr.dataset.kind = e.kind;
    return tr;
  });
  $("events").tBodies[0].replaceChildren(...rows);
}

// The picture is shown only once it has loaded: before the first checkpoint, or while a
// request for it fails, the panel shows its placeholder, never a broken-image icon.
function showFilters(loaded) {
  $("filters-img").hidden = !loaded;
  $("filters-none").hidden = loaded;
}

function renderFilters(run) {
  if (run.filters_url === state.filtersUrl) return;
  const st = state, img = $("filters-img");
  st.filtersUrl = run.filters_url;
  if (!run.filters_url) {
    showFilters(false);
    img.removeAttribute("src");
    return;
  }
  img.onload = () => { if (st === state) showFilters(true); };
  img.onerror = () => { if (st === state) { showFilters(false); st.filtersUrl = null; } };  // retried next refresh
  img.src = run.filters_url;
}

// -- loop --------------------------------------------------------------------------------
let ticks = 0, timer = null;
function schedule(ms) {
  clearTimeout(timer);
  timer = setTimeout(refresh, ms);
}

async function refresh() {
  const st = state;
  try {
    if (ticks++ % 10 === 0) await loadRuns();
    if (st.runId == null) { await pickRun(); return; }
    const run = await getJSON(`/api/runs/${st.runId}`);
    await refreshEvents(st);
    await refreshSeries(st);
    if (st !== state) return;  // the operator switched runs meanwhile
    st.run = run;
    renderStats(run);
    renderCharts(run);
    renderEvents();
    renderFilters(run);
    await refreshAdvice(getJSON, run);
    await comparison.refresh();
    $("banner").hidden = true;
    $("refresh-info").textContent = `refreshed ${fmt.clock(Date.now() / 1000)}`;
    document.body.dataset.loaded = "true";
  } catch (e) {
    $("banner").hidden = false;
    $("banner").textContent = `Cannot reach the server (${e.message}); retrying every ${refreshMs / 1000} s.`;
  } finally {
    schedule(refreshMs);
  }
}

async function main() {
  makeCharts();
  comparison = new Comparison(getJSON);
  initDivide(() => state.run);
  initAdvice();
  $("run-select").addEventListener("change", ev => { selectRun(Number(ev.target.value)); schedule(0); });
  // A link pasted into this tab's address bar: show the view it names.
  window.addEventListener("hashchange", () => {
    comparison.readUrl();
    const id = runFromHash();
    if (id != null && id !== state.runId) selectRun(id);
    schedule(0);
  });
  try {
    refreshMs = 1000 * (await getJSON("/api/server")).refresh_s;
    await pickRun();
  } catch (e) { /* refresh() shows the banner and retries */ }
  schedule(0);
}

main();
