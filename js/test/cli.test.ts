/** The command line: the kit's request from flags or a request file gives the kit's explanation JSON, and bad
 * input is one line on stderr with exit status 2. */

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { CASES, KIT, assertExplains } from "./kit.js";

const CLI = join(dirname(fileURLToPath(import.meta.url)), "..", "src", "cli.js");
const FOLDER = join(KIT, "models", "llama-log_additive");

function cli(...args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
}

const kase = CASES.find((c) => c.name === "log_additive-word");

test("flags and a request file each give the kit's explanation, written whole to --json", () => {
  assert.ok(kase);
  const dir = mkdtempSync(join(tmpdir(), "atman-cli-"));
  const requestFile = join(dir, "request.json");
  writeFileSync(requestFile, JSON.stringify(kase.request));
  const { prompt, target, granularity } = kase.request as { prompt: string; target: string; granularity: string };
  const runs = [
    ["--prompt", prompt, "--target", target, "--granularity", granularity],
    ["--request", requestFile],
  ];
  runs.forEach((flags, k) => {
    const out = join(dir, `out${k}.json`);
    const run = cli("explain", FOLDER, ...flags, "--json", out, "--top", "3");
    assert.equal(run.status, 0, run.stderr);
    const lines = run.stdout.trim().split("\n");
    assert.equal(lines.length, 4);
    assert.match(lines[3], /^14 units, 15 passes, [\d.]+ s$/);
    assertExplains(JSON.parse(readFileSync(out, "utf8")), kase.explanation, kase.tolerance);
  });
  assert.deepEqual(readdirSync(dir).sort(), ["out0.json", "out1.json", "request.json"]);
});

test("bad input is one line naming the problem, exit status 2, and no file", () => {
  const dir = mkdtempSync(join(tmpdir(), "atman-cli-"));
  const out = join(dir, "out.json");
  const cases: [string[], RegExp][] = [
    [["explain", FOLDER], /give --prompt TEXT or --request FILE/],
    [["explain", FOLDER, "--prompt", "x", "--factor", "abc"], /--factor: 'abc' is not a number/],
    [["explain", join(dir, "missing"), "--prompt", "x", "--granularity", "nope"], /field 'granularity'/],
    [["explain", FOLDER, "--prompt", "x", "--top", " "], /--top: ' ' is not a count/],
    [["explain", FOLDER, "--prompt", "x", "--json", join(dir, "no", "out.json")], /its folder does not exist/],
    [["explain", FOLDER, "--request", join(dir, "missing.json")], /--request .*missing\.json/],
    [["explain", FOLDER, "--request", FOLDER, "--prompt", "x"], /--request takes the whole request/],
    [["explain", FOLDER, "--prompt", "x", "--colour", "red"], /--colour/],
    [["export", FOLDER], /usage: atman-onnx-js explain FOLDER/],
  ];
  for (const [args, message] of cases) {
    const run = cli(...(args.includes("--json") ? args : [...args, "--json", out]));
    assert.equal(run.status, 2, `${args.join(" ")}: ${run.stdout}`);
    assert.equal(run.stderr.trim().split("\n").length, 1, run.stderr);
    assert.match(run.stderr, /^atman-onnx-js: error: /);
    assert.match(run.stderr, message);
  }
  assert.equal(existsSync(out), false);
});

test("a folder that is no export fails after the request is checked: one line, exit status 1", () => {
  const run = cli("explain", join(mkdtempSync(join(tmpdir(), "atman-cli-")), "missing"), "--prompt", "x");
  assert.equal(run.status, 1);
  assert.match(run.stderr, /^atman-onnx-js: error: .*has no atman\.json/);
  assert.equal(run.stderr.trim().split("\n").length, 1);
});
