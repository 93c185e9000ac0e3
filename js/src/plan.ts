/** Which rows go into which graph call (runtime/plan.py, on CPU).
 *
 * - ``prefix`` (default): suppressing position i changes nothing before i, so a batch whose earliest changed
 *   position is i feeds only positions >= i, on the unperturbed pass's cached keys and values of the positions
 *   before. Rows are sorted by that position; a row joins a batch while its own start lies within ``WASTE`` of the
 *   batch's suffix, and only labels at positions >= i are scored (the rest keep their unperturbed log-probs).
 * - ``naive``: every row feeds all positions. */

export const SCHEDULES = ["prefix", "naive"] as const;
export type Schedule = (typeof SCHEDULES)[number];
/** prefix schedule: a batch may recompute at most this share of its suffix for its later rows */
const WASTE = 0.05;

export interface Batch {
  /** which rows of the factors */
  rows: number[];
  /** the first fed position: positions before it come from the cache */
  start: number;
}

/** For each of ``rows`` rows of ``factors`` ([rows x nFed], row-major), the earliest position whose factor is not
 * 1 (``nFed`` when none is). */
export function firstChanged(factors: Float32Array, nFed: number): number[] {
  return Array.from({ length: factors.length / nFed }, (_, row) => {
    for (let p = 0; p < nFed; p++) if (factors[row * nFed + p] !== 1) return p;
    return nFed;
  });
}

/** The rows and first fed position of each graph call: at most ``batchSize`` rows, and at most ``cap(start)`` for
 * a call that feeds from ``start`` on (the attention scores' memory). */
export function planBatches(
  starts: number[],
  batchSize: number,
  schedule: Schedule,
  nFed: number,
  cap: (start: number) => number = () => Infinity,
): Batch[] {
  const order = starts.map((_, i) => i).sort((a, b) => starts[a] - starts[b] || a - b);
  const batches: Batch[] = [];
  if (schedule === "naive") {
    const size = Math.min(batchSize, cap(0));
    for (let k = 0; k < order.length; k += size) batches.push({ rows: order.slice(k, k + size), start: 0 });
    return batches;
  }
  for (let k = 0; k < order.length; ) {
    const first = starts[order[k]];
    const size = Math.min(batchSize, cap(Math.min(first, nFed - 1)));
    let end = k + 1;
    while (end < order.length && end - k < size && starts[order[end]] - first <= WASTE * (nFed - first)) end++;
    batches.push({ rows: order.slice(k, end), start: first });
    k = end;
  }
  return batches;
}
