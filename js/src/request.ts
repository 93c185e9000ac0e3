/** One explanation request: the public request fields this runtime takes, with Python's defaults and checks
 * (atman_onnx/request.py). */

import { strip } from "./chars.js";
import { SCHEDULES, type Schedule } from "./plan.js";
import type { Message } from "./text.js";

/** Default suppression factor: in log_additive mode 0 takes the unit out of attention. */
export const DEFAULT_FACTOR = 0.0;
const MAX_FACTOR = 1e6;
/** Default length limit of a generated target (``max_new_tokens``). */
export const DEFAULT_MAX_NEW_TOKENS = 32;
/** Granularities this runtime explains at (Python's also include document and spans). */
export const GRANULARITIES = ["token", "word", "sentence", "paragraph"] as const;
export type Granularity = (typeof GRANULARITIES)[number];
/** What a column of relevance is: a target token, a sentence of the target, or the complete target. */
export const TARGET_GRANULARITIES = ["token", "sentence", "complete"] as const;
export type TargetGranularity = (typeof TARGET_GRANULARITIES)[number];

export type Prompt = string | Message[];

/** The request as JSON has it (the HTTP API's field names). */
export interface RequestFields {
  prompt: Prompt;
  /** null or absent: the model's greedy completion */
  target?: string | null;
  factor?: number;
  conceptual?: number | null;
  granularity?: string;
  contrast?: string | null;
  batch_size?: number | null;
  schedule?: string;
  target_granularity?: string;
  max_new_tokens?: number;
}

export interface ExplainRequest {
  prompt: Prompt;
  target: string | null;
  factor: number;
  conceptual: number | null;
  granularity: Granularity;
  contrast: string | null;
  batchSize: number | null;
  schedule: Schedule;
  targetGranularity: TargetGranularity;
  maxNewTokens: number;
}

const FIELDS = [
  "prompt",
  "target",
  "factor",
  "conceptual",
  "granularity",
  "target_granularity",
  "contrast",
  "max_new_tokens",
  "batch_size",
  "schedule",
];

function isMessages(value: unknown): value is Message[] {
  return (
    Array.isArray(value) &&
    value.length > 0 &&
    value.every(
      (m) =>
        typeof m === "object" && m !== null && typeof m.role === "string" && typeof m.content === "string",
    )
  );
}

/** A field's value, which must be one of ``choices``. */
function choice<T extends string>(name: string, noun: string, value: string, choices: readonly T[]): T {
  if (!(choices as readonly string[]).includes(value)) {
    const available = choices.join(", ");
    throw new Error(`field '${name}': unknown ${noun} ${JSON.stringify(value)}; available: ${available}`);
  }
  return value as T;
}

/** A field's value, which must be an integer of at least 1 (or null, when ``value`` is). */
function count(name: string, value: number | null): number | null {
  if (value !== null && !(Number.isInteger(value) && value >= 1)) {
    throw new Error(`field '${name}': must be an integer of at least 1, got ${value}`);
  }
  return value;
}

function number(name: string, value: unknown, label: string, low: number, high: number, open: boolean): number {
  if (typeof value !== "number") throw new Error(`field '${name}' must be a number, got ${JSON.stringify(value)}`);
  if (!(open ? value > low : value >= low) || !(value <= high)) {
    const range = open ? `lie in (${low}, ${high}]` : `be a number from ${low} to ${high}`;
    throw new Error(`field '${name}': ${label} must ${range}, got ${value}`);
  }
  return value;
}

/** The request with its defaults, checked; an Error naming the field for anything wrong. */
export function makeRequest(fields: RequestFields): ExplainRequest {
  if (typeof fields !== "object" || fields === null) throw new Error("a request is a JSON object");
  const unknown = Object.keys(fields).filter((k) => !FIELDS.includes(k)).sort();
  if (unknown.length) throw new Error(`unknown field '${unknown[0]}'; fields: ${FIELDS.join(", ")}`);
  const { prompt } = fields;
  const target = fields.target ?? null;
  if (typeof prompt !== "string" && !isMessages(prompt)) {
    throw new Error("field 'prompt' must be a string or a list of chat messages {role, content} with string values");
  }
  const texts = typeof prompt === "string" ? [prompt] : prompt.map((m) => m.content);
  if (!texts.some((t) => strip(t))) throw new Error("the prompt is empty");
  if (target !== null && typeof target !== "string") throw new Error("field 'target' must be a string or null");
  if (target === "") throw new Error("the target is empty");
  const contrast = fields.contrast ?? null;
  if (contrast !== null && typeof contrast !== "string") throw new Error("field 'contrast' must be a string");
  if (contrast === "") throw new Error("the contrast is empty");
  const factor = number("factor", fields.factor ?? DEFAULT_FACTOR, "suppression factor", 0, MAX_FACTOR, false);
  const conceptual =
    fields.conceptual == null ? null : number("conceptual", fields.conceptual, "conceptual threshold", 0, 1, true);
  const granularity = choice("granularity", "granularity", fields.granularity ?? "token", GRANULARITIES);
  const targetGranularity = choice(
    "target_granularity",
    "target granularity",
    fields.target_granularity ?? "token",
    TARGET_GRANULARITIES,
  );
  if (contrast !== null && targetGranularity !== "token") {
    throw new Error("a contrast has one column of relevance already; leave target_granularity at 'token'");
  }
  const schedule = choice("schedule", "schedule", fields.schedule ?? "prefix", SCHEDULES);
  const batchSize = count("batch_size", fields.batch_size ?? null);
  const maxNewTokens = count("max_new_tokens", fields.max_new_tokens ?? DEFAULT_MAX_NEW_TOKENS) as number;
  return {
    prompt,
    target,
    factor,
    conceptual,
    granularity,
    contrast,
    batchSize,
    schedule,
    targetGranularity,
    maxNewTokens,
  };
}
