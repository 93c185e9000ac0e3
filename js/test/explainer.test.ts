/** The public API: options, progress, aborting, refusals, and the JSON file it writes. */

import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import { Explainer, type Unit } from "../src/index.js";
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
  for (const schedule of ["naive", "prefix"]) {
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
    model.explain(PROMPT, TARGET, { granularity: "chapter" }),
    /unknown granularity "chapter"; available: token, word, sentence, paragraph/,
  );
  await assert.rejects(model.explain(PROMPT, TARGET, { schedule: "eager" }), /unknown schedule "eager"/);
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
  await assert.rejects(Explainer.load(join(KIT, "cases"), { ort: {} as never }), /has no atman.json/);
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
