/** The result of an explanation: a plain object that serialises to the explanation JSON (format_version 4,
 * docs/reference/json.md), which Python's ``Explanation.from_json`` reads. */

import type { Mode } from "./manifest.js";
import type { Granularity, TargetGranularity } from "./request.js";
import type { Token, Unit } from "./units.js";

export const JSON_VERSION = 4;

export interface Timings {
  total_s: number;
  explain_s: number;
  generate_s: number;
  passes: number;
  batch_size: number;
  schedule: string;
  positions_computed: number;
}

export interface ExplanationFields {
  prompt: string;
  target: string;
  prompt_ids: number[];
  target_ids: number[];
  tokens: Token[];
  target_tokens: string[];
  units: Unit[];
  /** one row per unit, one value per column (a target token, a target sentence, the complete target, or the
   * contrast): CE_u(t) - CE_0(t) summed over the column's target tokens */
  relevance: number[][];
  mode: Mode;
  suppression_factor: number;
  conceptual_threshold: number | null;
  granularity: Granularity;
  target_granularity: TargetGranularity;
  contrast: string | null;
  contrast_ids: number[] | null;
  model: string;
  provider: string;
  timings: Timings;
  warnings: string[];
}

function unitJSON(unit: Unit) {
  const { text, start, end, segment, positions } = unit;
  return { text, start, end, segment, positions, location: { type: "text", segment, start, end } };
}

export class Explanation {
  constructor(readonly fields: ExplanationFields) {}

  /** Relevance of each unit for the whole target: the sum over the target tokens. */
  get total(): number[] {
    return this.fields.relevance.map((row) => Math.fround(row.reduce((s, x) => s + x, 0)));
  }

  /** The explanation JSON's object (``JSON.stringify(explanation)`` writes it). */
  toJSON(): Record<string, unknown> {
    const f = this.fields;
    const units = f.units.map(unitJSON);
    return {
      format_version: JSON_VERSION,
      prompt: f.prompt,
      target: f.target,
      prompt_ids: f.prompt_ids,
      target_ids: f.target_ids,
      tokens: f.tokens,
      target_tokens: f.target_tokens,
      units,
      relevance: f.relevance,
      mode: f.mode,
      suppression_factor: f.suppression_factor,
      conceptual_threshold: f.conceptual_threshold,
      granularity: f.granularity,
      target_granularity: f.target_granularity,
      contrast: f.contrast,
      contrast_ids: f.contrast_ids,
      model: f.model,
      provider: f.provider,
      timings: f.timings,
      images: [],
      levels: [{ granularity: f.granularity, units, relevance: f.relevance }],
      warnings: f.warnings,
      relevance_total: this.total,
    };
  }
}
