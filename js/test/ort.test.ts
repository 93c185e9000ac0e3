/** Both ONNX Runtime packages fit the interface the explainer takes (checked by the compiler), and the Node one
 * loads the kit's graph. */

import assert from "node:assert/strict";
import { test } from "node:test";

import type * as ortNode from "onnxruntime-node";
import type * as ortWeb from "onnxruntime-web";

import type { OrtModule } from "../src/index.js";
import { explainer } from "./kit.js";

const nodeFits: typeof ortNode extends OrtModule ? true : never = true;
const webFits: typeof ortWeb extends OrtModule ? true : never = true;

test("onnxruntime-node and onnxruntime-web fit OrtModule", async () => {
  assert.ok(nodeFits && webFits);
  assert.equal((await explainer("models/llama-multiplicative")).manifest.mode, "multiplicative");
});
