// The page's view in the URL's fragment (#run=3&compare=1,2&metric=val_top5_error), so that
// a copied link opens the same view. replaceState: changing the view adds no history entry.

export function readHash() {
  return new URLSearchParams(location.hash.slice(1));
}

// changes: {key: value}; null or "" removes the key.
export function updateHash(changes) {
  const params = readHash();
  for (const [k, v] of Object.entries(changes)) {
    if (v == null || v === "") params.delete(k); else params.set(k, String(v));
  }
  // Commas kept readable: ids and metric names need no escaping.
  history.replaceState(null, "", "#" + params.toString().replaceAll("%2C", ","));
}

// A comma-separated list of run ids; anything else in it is ignored.
export function idList(value) {
  return [...new Set((value || "").split(",").filter(s => /^\d{1,15}$/.test(s)).map(Number))];
}
