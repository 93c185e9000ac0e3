/** Greedy generation with the exported graph: what the model itself completes, when no target is given
 * (runtime/generate.py). */

import type { Cache, Graph } from "./graph.js";

/** Greedy completion (unperturbed, on the graph's key/value cache) of ``prompt``, up to ``maxNewTokens`` tokens or
 * a token of ``endIds``; the new ids. ``check`` runs before every step (to abort). */
export async function generate(
  graph: Graph,
  prompt: number[],
  maxNewTokens: number,
  endIds: number[],
  check: () => void,
): Promise<number[]> {
  const ids: number[] = [];
  let fed = prompt;
  let past: Cache | null = null;
  while (ids.length < maxNewTokens) {
    check();
    const { logits, cache } = await graph.step(fed, past);
    let token = 0;
    logits.forEach((x, i) => {
      if (x > logits[token]) token = i;
    });
    if (endIds.includes(token)) break;
    ids.push(token);
    fed = [token];
    past = cache;
  }
  return ids;
}
