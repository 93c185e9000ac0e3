/** The browser's path, in Node: the kit's folder fetched by URL from a local HTTP server and run with
 * onnxruntime-web (WASM) gives the kit's explanation. */

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join, normalize } from "node:path";
import { after, before, test } from "node:test";

import * as ort from "onnxruntime-web";

import { Explainer, urlSource } from "../src/index.js";
import { CASES, KIT } from "./kit.js";

/** The kit's files; under /forbidden/ a chat template is HTTP 403 (a bucket's missing key), under /html/ every
 * file is an HTML page (a dev server's fallback to index.html). */
const server = createServer(async (request, response) => {
  let path = normalize(decodeURIComponent(new URL(request.url ?? "/", "http://localhost").pathname));
  if (path.startsWith("/html/")) {
    response.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end("<!doctype html><p>app</p>");
    return;
  }
  if (path.startsWith("/forbidden/")) {
    if (path.endsWith("chat_template.jinja")) {
      response.writeHead(403).end();
      return;
    }
    path = path.slice("/forbidden".length);
  }
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

test("HTTP 403 is a missing file when the file is optional, and an HTML page is refused", async () => {
  const { port } = server.address() as AddressInfo;
  const base = `http://127.0.0.1:${port}`;
  const forbidden = urlSource(`${base}/forbidden/models/llama-log_additive/`);
  assert.equal(await forbidden.bytes("chat_template.jinja", true), null);
  await assert.rejects(forbidden.bytes("chat_template.jinja"), /chat_template.jinja .*: HTTP 403/);
  const explainer = await Explainer.load(`${base}/forbidden/models/llama-log_additive/`, { ort });
  assert.equal(explainer.codec.chatTemplate, null);
  await explainer.release();
  await assert.rejects(
    Explainer.load(`${base}/html/models/llama-log_additive/`, { ort }),
    /^Error: fetching atman.json from .*\/html\/.*: the server sent an HTML page, not the file; check the URL$/,
  );
});
