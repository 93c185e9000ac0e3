/** The conformance kit (../conformance): its cases, and explainers for its folders, loaded once each. */

import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import * as ort from "onnxruntime-node";

import { Explainer, type RequestFields } from "../src/index.js";

/** test files run from dist/test/, the kit lies at the repository's root */
export const KIT = resolve(dirname(fileURLToPath(import.meta.url)), "../../../conformance");

export interface Case {
  name: string;
  model: string;
  tolerance: number;
  request: RequestFields;
  explanation: Record<string, unknown>;
}

/** the kit's text cases: this runtime explains text (the image-text cases, graph contract 4, are Python's) */
export const CASES: Case[] = readdirSync(join(KIT, "cases"))
  .filter((file) => file.endsWith(".json"))
  .sort()
  .map((file) => ({
    name: file.replace(/\.json$/, ""),
    ...JSON.parse(readFileSync(join(KIT, "cases", file), "utf8")),
  }))
  .filter((kase) => !("images" in kase.request));

const loaded = new Map<string, Promise<Explainer>>();

export function explainer(model: string): Promise<Explainer> {
  if (!loaded.has(model)) loaded.set(model, Explainer.load(join(KIT, model), { ort }));
  return loaded.get(model) as Promise<Explainer>;
}

const CLOSE = ["relevance", "relevance_total"];

function assertClose(got: unknown, want: unknown, tolerance: number, field: string): void {
  if (Array.isArray(want)) {
    assert.ok(Array.isArray(got) && got.length === want.length, `${field}: shape differs`);
    want.forEach((w, i) => assertClose((got as unknown[])[i], w, tolerance, `${field}[${i}]`));
    return;
  }
  const diff = Math.abs((got as number) - (want as number));
  assert.ok(diff <= tolerance, `${field}: got ${got}, want ${want} (off by ${diff})`);
}

/** The kit's check: every field of ``want`` equal in ``got``, but relevance and its totals, within ``tolerance``. */
export function assertExplains(got: Record<string, unknown>, want: Record<string, unknown>, tolerance: number): void {
  for (const [field, value] of Object.entries(want)) {
    if (CLOSE.includes(field)) assertClose(got[field], value, tolerance, field);
    else assert.deepEqual(got[field], value, field);
  }
}
