/** The public API: options, progress, aborting, refusals, and the JSON file it writes. */

import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";

import * as ort from "onnxruntime-node";

import { Explainer, diskSource, type FileSource, type Unit } from "../src/index.js";
import type { Manifest } from "../src/manifest.js";
import { planBatches } from "../src/plan.js";
import { rowsWithinBudget } from "../src/scoring.js";
import { coverWarnings } from "../src/warnings.js";
import { CASES, KIT, explainer } from "./kit.js";

const MODEL = "models/llama-log_additive";
const PROMPT = "Alice met Bob in the garden, and Bob gave";
const TARGET = " Alice a red apple.";

test("explain takes the options as the request fields, and gives the kit's explanation", async () => {
  const kase = CASES.find((c) => c.name === "log_additive-word");
  assert.ok(kase);
  const got = (await (await explainer(MODEL)).explain(PROMPT, TARGET, { granularity: "word", batchSize: 3 })).toJSON();
  assert.deepEqual(got.units, kase.explanation.units);
  const want = kase.explanation.relevance as number[][];
  (got.relevance as number[][]).forEach((row, u) =>
    row.forEach((x, t) => assert.ok(Math.abs(x - want[u][t]) <= kase.tolerance)),
  );
  assert.equal((got.timings as { batch_size: number }).batch_size, 3);
});

test("progress is reported after every batch, up to the number of units", async () => {
  const model = await explainer(MODEL);
  for (const schedule of ["naive", "prefix"] as const) {
    const calls: [number, number][] = [];
    const explanation = await model.explain(PROMPT, TARGET, {
      granularity: "word",
      batchSize: 4,
      schedule,
      onProgress: (done, total) => calls.push([done, total]),
    });
    const n = explanation.fields.units.length;
    assert.deepEqual(calls[calls.length - 1], [n, n]);
    calls.forEach(([done, total], i) => assert.ok(total === n && done > (calls[i - 1]?.[0] ?? 0) && done <= n));
    if (schedule === "naive") {
      assert.deepEqual(calls, Array.from({ length: Math.ceil(n / 4) }, (_, i) => [Math.min(n, (i + 1) * 4), n]));
    }
  }
});

test("each batch's rows come as they are scored, and equal the explanation's", async () => {
  const rows = new Map<Unit, number[]>();
  const explanation = await (await explainer(MODEL)).explain(PROMPT, TARGET, {
    batchSize: 5,
    onRows: (units, relevance) => units.forEach((unit, i) => rows.set(unit, relevance[i])),
  });
  assert.deepEqual(
    explanation.fields.units.map((unit) => rows.get(unit)),
    explanation.fields.relevance,
  );
});

test("the naive schedule gives the prefix schedule's numbers, computing more positions", async () => {
  const model = await explainer(MODEL);
  const prefix = await model.explain(PROMPT, TARGET, { conceptual: 0.7, batchSize: 4 });
  const naive = await model.explain(PROMPT, TARGET, { conceptual: 0.7, batchSize: 4, schedule: "naive" });
  naive.fields.relevance.forEach((row, u) =>
    row.forEach((x, t) => assert.ok(Math.abs(x - prefix.fields.relevance[u][t]) <= 1e-4)),
  );
  assert.equal(prefix.fields.timings.passes, naive.fields.timings.passes);
  assert.ok(prefix.fields.timings.positions_computed < naive.fields.timings.positions_computed);
  assert.equal(naive.fields.timings.schedule, "naive");
});

test("aborting rejects with an AbortError between batches", async () => {
  const controller = new AbortController();
  const run = (await explainer(MODEL)).explain(PROMPT, TARGET, {
    batchSize: 2,
    signal: controller.signal,
    onProgress: (done) => done >= 4 && controller.abort(),
  });
  await assert.rejects(run, (error: Error) => error.name === "AbortError");
});

test("an unknown granularity, a bad factor or an unknown field is refused naming it", async () => {
  const model = await explainer(MODEL);
  await assert.rejects(
    model.explain(PROMPT, TARGET, { granularity: "chapter" as never }),
    /unknown granularity "chapter"; available: token, word, sentence, paragraph/,
  );
  await assert.rejects(model.explain(PROMPT, TARGET, { schedule: "eager" as never }), /unknown schedule "eager"/);
  await assert.rejects(
    model.explain(PROMPT, TARGET, { contrast: " Bob", targetGranularity: "sentence" }),
    /a contrast has one column of relevance already/,
  );
  await assert.rejects(model.explain(PROMPT, null, { maxNewTokens: 0 }), /field 'max_new_tokens'/);
  await assert.rejects(model.explain(PROMPT, null, { maxNewTokens: 500 }), /longer than the model's 128 positions/);
  await assert.rejects(model.explain(PROMPT, TARGET, { factor: -1 }), /field 'factor'/);
  await assert.rejects(model.explain(PROMPT, TARGET, { conceptual: 0 }), /field 'conceptual'/);
  await assert.rejects(model.explain("  ", TARGET), /the prompt is empty/);
  await assert.rejects(model.run({ prompt: PROMPT, target: TARGET, spans: [] } as never), /unknown field 'spans'/);
});

test("a folder that is not an export is refused in one line", async () => {
  await assert.rejects(Explainer.load(join(KIT, "cases"), { ort }), /has no atman.json/);
});

test("explain() refuses options with JSON (snake_case) names, naming them", async () => {
  const model = await explainer(MODEL);
  await assert.rejects(
    model.explain(PROMPT, TARGET, { batch_size: 2 } as never),
    /explain\(\) takes camelCase options: 'batchSize', not 'batch_size'/,
  );
  await assert.rejects(model.explain(PROMPT, null, { max_new_tokens: 2 } as never), /'maxNewTokens'/);
});

/** The kit's folder with some of its files replaced. */
function patched(files: Record<string, string | Uint8Array>): FileSource {
  const disk = diskSource(join(KIT, MODEL));
  return {
    where: "patched",
    async bytes(name: string) {
      const file = files[name];
      if (file === undefined) return disk.bytes(name);
      return typeof file === "string" ? new TextEncoder().encode(file) : file;
    },
  };
}

test("loading refuses in one line naming the file: no ort, broken JSON, a bad tokenizer, external data", async () => {
  const source = patched({});
  await assert.rejects(Explainer.load(source, {} as never), /Explainer.load needs options.ort/);
  await assert.rejects(Explainer.load(source, { ort: {} as never }), /needs options.ort/);
  await assert.rejects(
    Explainer.load(patched({ "atman.json": "{" }), { ort }),
    /^Error: patched: atman.json is not JSON/,
  );
  await assert.rejects(
    Explainer.load(patched({ "tokenizer.json": "{" }), { ort }),
    /^Error: patched: tokenizer.json is not JSON/,
  );
  await assert.rejects(
    Explainer.load(patched({ "tokenizer.json": '{"model": {"type": "Nope"}}' }), { ort }),
    /^Error: patched: tokenizer.json: /,
  );
  // ModelProto { graph { initializer { name: "w", data_location: EXTERNAL } } }
  const external = new Uint8Array([0x3a, 7, 0x2a, 5, 0x42, 1, 0x77, 0x70, 1]);
  await assert.rejects(
    Explainer.load(patched({ "model.onnx": external }), { ort }),
    /patched: model.onnx keeps its weights in an external data file .* does not read external data yet/,
  );
});

test("a file: URL is read from disk", async () => {
  const model = await Explainer.load(pathToFileURL(join(KIT, MODEL)).href, { ort });
  assert.equal(model.manifest.mode, "log_additive");
  await model.release();
});

test("graph calls keep their attention scores within the budget, and a too long row is refused", () => {
  const manifest = { dims: { num_layers: 1, num_heads: 32, kv_heads: 8, head_dim: 64 } } as Manifest;
  assert.equal(rowsWithinBudget(manifest, 1024, 1024), 8); // 32 heads x 1024 x 1024 x 4 bytes = 128 MiB a row
  assert.equal(rowsWithinBudget(manifest, 256, 1024), 32);
  assert.throws(
    () => rowsWithinBudget(manifest, 8192, 8192),
    /^Error: a sequence of 8192 tokens needs 8.0 GiB of attention scores .* query chunks of long prompts/,
  );
  const starts = [0, 0, 0, 1, 1, 2, 900, 900, 900];
  const cap = (start: number) => rowsWithinBudget(manifest, 1024 - start, 1024);
  assert.deepEqual(
    planBatches(starts, 100, "prefix", 1024, cap).map((b) => b.rows.length),
    [6, 3], // rows from 0: 8 allowed (all 6 fit); rows from 900: 66 allowed
  );
  assert.deepEqual(
    planBatches(starts, 100, "naive", 1024, cap).map((b) => b.rows.length),
    [8, 1],
  );
  const tight = (start: number) => (start < 500 ? 2 : 100);
  assert.deepEqual(
    planBatches(starts, 100, "prefix", 1024, tight).map((b) => b.rows.length),
    [2, 2, 2, 3],
  );
});

test("warnings quote text as Python's repr, escaping what Python does not print", () => {
  const text = "Bob\u200b\xa0\u2028\ufeff\x85\xad\u{e0001} é😀 sleeps.";
  const unit = { text, start: 0, end: 10, segment: "prompt" as const, positions: [0, 1] };
  const [warning] = coverWarnings("sentence", [unit], 2, "log_additive");
  assert.ok(warning.startsWith("sentence 'Bob\\u200b\\xa0\\u2028\\ufeff\\x85\\xad\\U000e0001 é😀 sleeps.' covers"));
});

test("the JSON file holds format 4 with timings, provider and model, and reads back", async () => {
  const explanation = await (await explainer(MODEL)).explain(PROMPT, TARGET, { granularity: "sentence", factor: 0.3 });
  const path = join(mkdtempSync(join(tmpdir(), "atman-js-")), "explanation.json");
  writeFileSync(path, JSON.stringify(explanation, null, 2));
  const data = JSON.parse(readFileSync(path, "utf8"));
  assert.equal(data.format_version, 4);
  assert.equal(data.provider, "cpu");
  assert.equal(data.timings.passes, data.units.length + 1);
  assert.ok(data.timings.total_s > 0);
  assert.deepEqual(data.levels, [{ granularity: "sentence", units: data.units, relevance: data.relevance }]);
  assert.equal(data.relevance.length, data.units.length);
  assert.equal(data.relevance_total.length, data.units.length);
  if (process.env.ATMAN_JS_EXPLANATION) writeFileSync(process.env.ATMAN_JS_EXPLANATION, JSON.stringify(explanation));
});

test("a unit covering the whole prompt carries Python's warning (log_additive only)", async () => {
  const warning =
    "sentence \"Bob's dog sleeps.\" covers the whole prompt, so suppressing it cannot change the first target " +
    "token (softmax ignores a shift of all its inputs): its score says nothing about it";
  const additive = await (await explainer(MODEL)).explain("Bob's dog sleeps.", " Paris", { granularity: "sentence" });
  assert.deepEqual(additive.fields.warnings, [warning]);
  const other = await explainer("models/llama-multiplicative");
  const multiplicative = await other.explain("Bob's dog sleeps.", " Paris", { granularity: "sentence" });
  assert.deepEqual(multiplicative.fields.warnings, []);
});
