// The difference between two texts as one contiguous change (what an in-place
// edit of sesame.yaml removed and inserted), for the user command suites.

/** The edit as one contiguous change: [prefix kept, removed part, inserted part, suffix kept]. */
export function change(before: string, after: string): { removed: string; inserted: string } {
  let p = 0;
  while (p < before.length && p < after.length && before[p] === after[p]) p++;
  let s = 0;
  while (s < before.length - p && s < after.length - p && before[before.length - 1 - s] === after[after.length - 1 - s]) s++;
  return { removed: before.slice(p, before.length - s), inserted: after.slice(p, after.length - s) };
}
