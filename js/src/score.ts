/** Log-probs to AtMan relevance: R[u, t] = CE_u(t) - CE_0(t) (runtime/score.py; docs/method.md, "Relevance"). */

/** [units][targets]: how much suppressing each unit raised each target token's cross-entropy (float32, as
 * Python's). Log-probs that are not finite are refused rather than turned into NaN relevance. */
export function relevance(base: Float32Array, perturbed: Float32Array): number[][] {
  const n = base.length;
  if (![...base, ...perturbed].every(Number.isFinite)) {
    throw new Error("the graph gave log-probabilities that are not finite; its numbers overflowed");
  }
  return Array.from({ length: perturbed.length / n }, (_, u) =>
    Array.from(base, (b, t) => Math.fround(b - perturbed[u * n + t])),
  );
}

/** The one contrast column: each unit's total relevance for the target minus its total for the contrast. */
export function contrastColumn(target: number[][], contrast: number[][]): number[][] {
  const sum = (row: number[]) => Math.fround(row.reduce((s, x) => s + x, 0));
  return target.map((row, u) => [Math.fround(sum(row) - sum(contrast[u]))]);
}

/** [units][columns]: relevance summed over each column's target tokens (exact: the log-probs of a sequence add
 * up). */
export function byColumns(relevance: number[][], columns: number[][]): number[][] {
  return relevance.map((row) => columns.map((c) => Math.fround(c.reduce((s, t) => s + row[t], 0))));
}
