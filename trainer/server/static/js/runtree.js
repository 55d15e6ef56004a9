// Runs as a tree: a fork (trainer train --fork-from) listed under its parent, indented, in
// the run selector and the comparison list. A run whose parent is not in the list (another
// run store, or deleted) is a root. Order: each root newest first, as GET /api/runs, with
// its forks after it.
export function treeOrder(runs) {
  const ids = new Set(runs.map(r => r.id)), children = new Map();
  for (const r of runs) {
    const parent = ids.has(r.parent_id) ? r.parent_id : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(r);
  }
  const out = [], seen = new Set();
  const walk = (r, depth) => {
    if (seen.has(r.id)) return;  // a cycle in hand-edited rows must not hang the page
    seen.add(r.id);
    out.push({run: r, depth});
    for (const c of children.get(r.id) || []) walk(c, depth + 1);
  };
  for (const r of children.get(null) || []) walk(r, 0);
  for (const r of runs) walk(r, 0);  // members of a cycle: shown at the top level
  return out;
}

// "  └ name": the select's options are text, so the tree is drawn with characters.
export function treeLabel(run, depth) {
  return depth ? "\u00a0\u00a0".repeat(depth - 1) + "\u00a0└\u00a0" + run.name : run.name;
}
