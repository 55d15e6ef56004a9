// Number formats shared by the stat panels, the tooltips and the dialog.
export const dash = "–";

export function lr(v) {
  return v == null ? dash : Number(v).toExponential(2).replace("e-", "e−");
}

export function pct(v, digits = 1) {
  return v == null ? dash : (100 * v).toFixed(digits) + "%";
}

// An axis label in percent with as many decimals as the ticks' spacing needs (89.5%, 90.0%,
// not 90%, 90%).
export function pctTick(v, incr) {
  const digits = incr > 0 ? Math.ceil(-Math.log10(incr * 100) - 1e-9) : 0;
  return pct(v, Math.min(3, Math.max(0, digits)));
}

export function num(v, digits = 0) {
  if (v == null) return dash;
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(2) + "G";
  if (a >= 1e6) return (v / 1e6).toFixed(2) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
  return Number(v).toFixed(digits);
}

export function int(v) {
  return v == null ? dash : Math.round(v).toLocaleString("en-US");
}

export function duration(s) {
  if (s == null || !isFinite(s)) return dash;
  s = Math.max(0, Math.round(s));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

export function clock(wall) {
  return wall == null ? dash : new Date(wall * 1000).toLocaleTimeString([], {hour12: false});
}

export function ago(wall) {
  return wall == null ? dash : duration(Date.now() / 1000 - wall) + " ago";
}

// A power of ten as the LR axis labels it: 1e−3.
export function decade(v) {
  return `1e${Math.round(Math.log10(v))}`.replace("-", "−");
}

// A path the trainer wrote under the run directory, relative to it (checkpoints/epoch-001.pt):
// the server's absolute paths say nothing to someone reading the page. Others stay as they are.
export function runRelative(path, runDir) {
  const norm = p => String(p).replace(/^\.\//, "").replace(/\/+$/, "");
  if (!runDir || typeof path !== "string") return path;
  const dir = norm(runDir) + "/";
  const p = norm(path);
  return p.startsWith(dir) && p.length > dir.length ? p.slice(dir.length) : path;
}
