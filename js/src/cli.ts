#!/usr/bin/env node
/** The command line in Node: ``atman-onnx-js explain FOLDER --prompt TEXT [--target T] [--json OUT]``, as Python's
 * ``atman-onnx explain`` (the same flag names for the fields JavaScript has), or ``--request FILE`` for a request
 * as JSON has it (the HTTP API's body). It prints the units' total relevance, strongest first, and writes the
 * explanation JSON to ``--json``. Needs onnxruntime-node installed beside the package. */

import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";

import { Explainer } from "./explainer.js";
import type { OrtModule } from "./ort.js";
import { makeRequest, type RequestFields } from "./request.js";

const USAGE =
  "usage: atman-onnx-js explain FOLDER (--prompt TEXT | --request FILE) [--target T] [--granularity G] " +
  "[--factor F] [--conceptual C] [--contrast T] [--target-granularity G] [--schedule S] [--batch-size N] " +
  "[--max-new-tokens N] [--json OUT] [--top K]";

/** Flags that carry a request field: flag name -> (field, number or text). */
const FIELD_FLAGS: Record<string, [keyof RequestFields, "number" | "text"]> = {
  prompt: ["prompt", "text"],
  target: ["target", "text"],
  granularity: ["granularity", "text"],
  factor: ["factor", "number"],
  conceptual: ["conceptual", "number"],
  contrast: ["contrast", "text"],
  "target-granularity": ["target_granularity", "text"],
  schedule: ["schedule", "text"],
  "batch-size": ["batch_size", "number"],
  "max-new-tokens": ["max_new_tokens", "number"],
};

class UsageError extends Error {}

function requestFrom(values: Record<string, string | undefined>): RequestFields {
  if (values.request !== undefined) {
    if (Object.keys(FIELD_FLAGS).some((flag) => values[flag] !== undefined)) {
      throw new UsageError("--request takes the whole request; give its fields there, not as flags");
    }
    let body: unknown;
    try {
      body = JSON.parse(readFileSync(values.request, "utf8"));
    } catch (error) {
      throw new UsageError(`--request ${values.request}: ${(error as Error).message}`);
    }
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      throw new UsageError(`--request ${values.request}: a request is a JSON object`);
    }
    return body as RequestFields;
  }
  if (values.prompt === undefined) throw new UsageError("give --prompt TEXT or --request FILE");
  const fields: Record<string, unknown> = {};
  for (const [flag, [field, kind]] of Object.entries(FIELD_FLAGS)) {
    const word = values[flag];
    if (word === undefined) continue;
    const number = Number(word);
    if (kind === "number" && (word.trim() === "" || !Number.isFinite(number))) {
      throw new UsageError(`--${flag}: '${word}' is not a number`);
    }
    fields[field] = kind === "number" ? number : word;
  }
  return fields as unknown as RequestFields;
}

/** ``text`` written to ``path`` whole or not at all: into a sibling file first, then renamed over it. */
function writeWhole(path: string, text: string): void {
  const partial = `${path}.${process.pid}.partial`;
  writeFileSync(partial, text);
  renameSync(partial, path);
}

async function main(argv: string[]): Promise<void> {
  const options = Object.fromEntries(
    [...Object.keys(FIELD_FLAGS), "request", "json", "top"].map((flag) => [flag, { type: "string" as const }]),
  );
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const [command, folder, ...rest] = parsed.positionals;
  if (command !== "explain" || folder === undefined || rest.length > 0) throw new UsageError(USAGE);
  const values = parsed.values as Record<string, string | undefined>;
  const top = values.top === undefined ? 10 : Number(values.top);
  if (values.top?.trim() === "" || !Number.isInteger(top) || top < 0) {
    throw new UsageError(`--top: '${values.top}' is not a count`);
  }
  const request = requestFrom(values);
  try {
    makeRequest(request); // checked before the model loads, as Python's command line does
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.json !== undefined && !existsSync(dirname(resolve(values.json)))) {
    throw new UsageError(`--json ${values.json}: its folder does not exist`);
  }
  let ort: OrtModule;
  try {
    ort = (await import("onnxruntime-node")) as unknown as OrtModule;
  } catch {
    throw new Error("onnxruntime-node is not installed: npm install onnxruntime-node");
  }
  const explainer = await Explainer.load(folder, { ort });
  try {
    const explanation = await explainer.run(request);
    const { units, timings } = explanation.fields;
    const totals = explanation.total;
    const order = units.map((_, i) => i).sort((a, b) => totals[b] - totals[a]);
    for (const i of order.slice(0, top)) {
      console.log(`${totals[i].toFixed(4).padStart(9)}  ${JSON.stringify(units[i].text)}`);
    }
    console.log(`${units.length} units, ${timings.passes} passes, ${timings.explain_s.toFixed(2)} s`);
    if (values.json !== undefined) writeWhole(values.json, `${JSON.stringify(explanation)}\n`);
  } finally {
    await explainer.release();
  }
}

main(process.argv.slice(2)).catch((error: unknown) => {
  const message = error instanceof Error ? error.message : String(error);
  console.error(`atman-onnx-js: error: ${message.split("\n")[0]}`);
  process.exitCode = error instanceof UsageError ? 2 : 1;
});
