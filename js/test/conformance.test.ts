/** The JS runtime passes the conformance kit, as tests/test_conformance.py holds the Python one to it: from the
 * kit's folders, every case's request gives the kit's explanation (relevance within the case's tolerance, every
 * other field equal). */

import assert from "node:assert/strict";
import { test } from "node:test";

import { CASES, assertExplains, explainer } from "./kit.js";

test("the kit covers both modes and every setting", () => {
  const names = new Set(CASES.map((c) => c.name));
  for (const mode of ["log_additive", "multiplicative"]) {
    for (const name of ["token", "chat", "word", "sentence", "conceptual", "contrast"]) {
      assert.ok(names.has(`${mode}-${name}`), `${mode}-${name}`);
    }
  }
});

for (const kase of CASES) {
  test(`the runtime gives the kit's explanation: ${kase.name}`, async () => {
    const got = JSON.parse(JSON.stringify(await (await explainer(kase.model)).run(kase.request)));
    assertExplains(got, kase.explanation, kase.tolerance);
  });
}
