/** The browser's path, in Node: the kit's folder fetched by URL from a local HTTP server and run with
 * onnxruntime-web (WASM) gives the kit's explanation. */

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join, normalize } from "node:path";
import { after, before, test } from "node:test";

import * as ort from "onnxruntime-web";

import { Explainer } from "../src/index.js";
import { CASES, KIT } from "./kit.js";

const server = createServer(async (request, response) => {
  const path = normalize(decodeURIComponent(new URL(request.url ?? "/", "http://localhost").pathname));
  try {
    response.end(await readFile(join(KIT, path)));
  } catch {
    response.writeHead(404).end();
  }
});

before(() => new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve)));
after(() => new Promise<void>((resolve) => server.close(() => resolve())));

test("a folder fetched by URL runs on onnxruntime-web and gives the kit's explanation", async () => {
  const kase = CASES.find((c) => c.name === "multiplicative-conceptual");
  assert.ok(kase);
  const { port } = server.address() as AddressInfo;
  ort.env.wasm.numThreads = 1;
  const explainer = await Explainer.load(`http://127.0.0.1:${port}/${kase.model}/`, {
    ort,
    sessionOptions: { executionProviders: ["wasm"] },
  });
  const got = (await explainer.run(kase.request)).toJSON();
  assert.equal(got.provider, "wasm");
  assert.deepEqual(got.units, kase.explanation.units);
  const want = kase.explanation.relevance as number[][];
  (got.relevance as number[][]).forEach((row, u) =>
    row.forEach((x, t) => assert.ok(Math.abs(x - want[u][t]) <= kase.tolerance, `relevance[${u}][${t}]`)),
  );
  await explainer.release();
});

test("a missing folder by URL is refused naming it", async () => {
  const { port } = server.address() as AddressInfo;
  await assert.rejects(Explainer.load(`http://127.0.0.1:${port}/nothing/`, { ort }), /nothing\/ has no atman.json/);
});
