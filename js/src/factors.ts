/** The perturbations: one row of per-key factors for every explained unit (runtime/factors.py; docs/method.md,
 * "Conceptual suppression"). With a conceptual threshold ``kappa``, every other explained position whose input
 * embedding has cosine similarity ``cos >= kappa`` to a position of the unit is suppressed in the same pass with
 * factor ``(1 - s) * (1 - cos) + s`` (the most similar member decides). */

/** Validate units (non-empty lists of positions inside the fed sequence); each sorted, without repeats. */
export function checkUnits(units: number[][], nFed: number): number[][] {
  if (!units.length) throw new Error("nothing to explain: no units were given");
  return units.map((unit) => {
    if (!unit.length) throw new Error("a group to explain is empty");
    const bad = unit.filter((p) => !(p >= 0 && p < nFed));
    if (bad.length) throw new Error(`group positions [${bad}] lie outside the fed sequence of ${nFed} tokens`);
    return [...new Set(unit)].sort((a, b) => a - b);
  });
}

/** Pairwise cosine similarity [n x n] of the rows of ``embeddings`` at ``rows`` (each ``hidden`` long), in
 * float64. */
function cosineSimilarity(embeddings: Float32Array, hidden: number, rows: number[]): Float64Array[] {
  const unit = rows.map((r) => {
    const e = Float64Array.from(embeddings.subarray(r * hidden, (r + 1) * hidden));
    const norm = Math.max(Math.sqrt(e.reduce((s, x) => s + x * x, 0)), 1e-12);
    return e.map((x) => x / norm);
  });
  return unit.map((a) =>
    Float64Array.from(unit, (b) => {
      let dot = 0;
      for (let k = 0; k < hidden; k++) dot += a[k] * b[k];
      return dot;
    }),
  );
}

export interface Conceptual {
  threshold: number;
  /** the unperturbed pass's input embeddings [nFed x hidden] */
  embeddings: Float32Array;
  hidden: number;
}

/** Factors [units x nFed] (float32, 1 = untouched), row-major, for suppressing each unit in its own pass. */
export function planFactors(
  units: number[][],
  nFed: number,
  factor: number,
  conceptual: Conceptual | null,
): Float32Array {
  const factors = new Float32Array(units.length * nFed).fill(1);
  if (conceptual !== null) {
    const explained = [...new Set(units.flat())].sort((a, b) => a - b);
    const index = new Map(explained.map((p, i) => [p, i]));
    const similarity = cosineSimilarity(conceptual.embeddings, conceptual.hidden, explained);
    units.forEach((unit, row) => {
      explained.forEach((p, j) => {
        const cos = Math.max(...unit.map((q) => similarity[index.get(q) as number][j]));
        if (cos >= conceptual.threshold) factors[row * nFed + p] = (1 - factor) * (1 - cos) + factor;
      });
    });
  }
  units.forEach((unit, row) => {
    for (const p of unit) factors[row * nFed + p] = factor;
  });
  return factors;
}
