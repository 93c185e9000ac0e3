/** One completion's relevance through the graph: its unperturbed pass, then every unit's row, several rows per
 * graph call (runtime/execute.py, without its query chunks). With the prefix schedule (default) a batch feeds only
 * the positions from its first changed one on, on the cached keys and values of the positions before
 * (docs/method.md, "The prefix schedule"); with the naive one every row feeds every position. */

import { checkUnits, planFactors } from "./factors.js";
import type { Cache, Graph } from "./graph.js";
import type { Manifest } from "./manifest.js";
import { firstChanged, planBatches } from "./plan.js";
import type { ExplainRequest } from "./request.js";
import { relevance } from "./score.js";
import type { Unit } from "./units.js";

/** Token positions one graph call feeds when the batch size is not given: rows = this / fed positions. */
export const POSITIONS_PER_CALL = 4096;
/** The most attention scores one graph call may hold, in bytes (float32: rows x heads x fed positions x keys x 4);
 * rows are capped to stay within it, as Python's query chunks are not ported. */
export const SCORES_BUDGET = 2 ** 30;

export interface RunOptions {
  /** called after every batch with the perturbations done and their total */
  onProgress?: (done: number, total: number) => void;
  /** aborting it rejects the explanation with an AbortError, between graph calls */
  signal?: AbortSignal;
  /** called after every batch with its units (in the schedule's order) and their relevance rows (one value per
   * target token), to show them as they come; not called with a contrast, whose column needs both completions */
  onRows?: (units: Unit[], relevance: number[][]) => void;
}

export function checkAbort(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new DOMException("the explanation was aborted", "AbortError");
}

/** How many rows one graph call feeding ``fed`` positions on ``keys`` keys may take within ``SCORES_BUDGET``;
 * an Error when not even one row fits. */
export function rowsWithinBudget(manifest: Manifest, fed: number, keys: number): number {
  const heads = manifest.dims.num_heads ?? manifest.dims.kv_heads;
  const bytes = heads * fed * keys * 4;
  const rows = Math.floor(SCORES_BUDGET / bytes);
  if (rows < 1) {
    const gib = (bytes / 2 ** 30).toFixed(1);
    throw new Error(
      `a sequence of ${keys} tokens needs ${gib} GiB of attention scores in one graph call, over the ` +
        `${SCORES_BUDGET / 2 ** 30} GiB this runtime allows; query chunks of long prompts are not ported yet`,
    );
  }
  return rows;
}

/** Rows ``rows`` of a row-major matrix ``width`` wide. */
function rowsOf(matrix: Float32Array, rows: number[], width: number): Float32Array {
  const out = new Float32Array(rows.length * width);
  rows.forEach((row, k) => out.set(matrix.subarray(row * width, (row + 1) * width), k * width));
  return out;
}

/** One completion ``ids`` after ``promptIds``: its unperturbed pass, then every unit's row in batches
 * (``planBatches``); its relevance [units][targets]. A label before a row's first changed position keeps its
 * unperturbed log-prob exactly, and a batch that changes no label makes no call. */
export async function scoreCompletion(
  graph: Graph,
  promptIds: number[],
  ids: number[],
  units: Unit[],
  request: ExplainRequest,
  progress: { done: number; total: number },
  { onProgress, signal, onRows }: RunOptions,
) {
  const fed = [...promptIds, ...ids.slice(0, -1)];
  const n = fed.length;
  const labelPositions = ids.map((_, t) => promptIds.length - 1 + t);
  rowsWithinBudget(graph.manifest, n, n); // refuses before any call when one row is too long
  checkAbort(signal);
  const base = await graph.score(fed, new Float32Array(n).fill(1), labelPositions, ids, null, true);
  const groups = checkUnits(units.map((u) => u.positions), n);
  const { conceptual: threshold } = request;
  const embeddings = base.embeddings as Float32Array;
  const conceptual = threshold === null ? null : { threshold, embeddings, hidden: graph.manifest.hidden_size };
  const factors = planFactors(groups, n, request.factor, conceptual);
  const starts = firstChanged(factors, n);
  const batchSize = request.batchSize ?? Math.max(1, Math.min(groups.length, Math.floor(POSITIONS_PER_CALL / n)));
  const cap = (start: number) => rowsWithinBudget(graph.manifest, n - start, n);
  const perturbed = new Float32Array(groups.length * ids.length);
  groups.forEach((_, row) => perturbed.set(base.logprobs, row * ids.length));
  let positions = n;
  for (const { rows, start } of planBatches(starts, batchSize, request.schedule, n, cap)) {
    const scored = labelPositions.flatMap((p, t) => (p >= start ? [t] : []));
    if (scored.length) {
      checkAbort(signal);
      const batch = rowsOf(factors, rows, n);
      const past = start > 0 ? graph.cut(base.cache as Cache, start) : null;
      const labels = scored.map((t) => ids[t]);
      const at = scored.map((t) => labelPositions[t] - start);
      const { logprobs } = await graph.score(fed.slice(start), batch, at, labels, past);
      rows.forEach((row, k) => {
        scored.forEach((t, j) => {
          if (labelPositions[t] >= starts[row]) perturbed[row * ids.length + t] = logprobs[k * scored.length + j];
        });
      });
      positions += rows.length * (n - start);
    }
    progress.done += rows.length;
    onProgress?.(progress.done, progress.total);
    onRows?.(
      rows.map((row) => units[row]),
      relevance(base.logprobs, rowsOf(perturbed, rows, ids.length)),
    );
  }
  return { relevance: relevance(base.logprobs, perturbed), passes: groups.length + 1, positions, batchSize };
}
