/** Token ids, character offsets and token texts equal Python ``tokenizers``' for tricky texts and tokenizer variants
 * (byte-level, added tokens that strip whitespace, offset trimming, SentencePiece-style prepended spaces;
 * test/data/offsets.py made the expected values), and the chat template renders as Python's jinja2 does. */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { TextCodec } from "../src/text.js";
import { KIT } from "./kit.js";

const DATA = resolve(dirname(fileURLToPath(import.meta.url)), "../../test/data/offsets.json");
const { variants, cases } = JSON.parse(readFileSync(DATA, "utf8"));
const FOLDER = join(KIT, "models", "llama-log_additive");
const tokenizer = JSON.parse(readFileSync(join(FOLDER, "tokenizer.json"), "utf8"));
const template = readFileSync(join(FOLDER, "chat_template.jinja"), "utf8");
const special = { bos_token: "<|endoftext|>", eos_token: "<|endoftext|>" };

function codec(variant: string): TextCodec {
  const json = { ...tokenizer, ...variants[variant] }; // the variant's top-level keys replace the kit's
  return new TextCodec(json, template, special);
}

for (const c of cases) {
  test(`offsets as Python's (${c.variant}, special tokens ${c.add_special_tokens}): ${JSON.stringify(c.text)}`, () => {
    const coder = codec(c.variant);
    const encoded = coder.encode(c.text, c.add_special_tokens);
    assert.deepEqual(encoded.ids, c.ids);
    assert.deepEqual(encoded.offsets, c.offsets);
    assert.deepEqual(coder.tokenTexts(encoded.ids), c.texts);
  });
}

test("chat messages render as the template says, with the generation prompt", () => {
  const text = codec("kit").renderChat([
    { role: "system", content: "Be brief." },
    { role: "user", content: "Hi?" },
  ]);
  assert.equal(text, "<system>\nBe brief.<|endoftext|>\n<user>\nHi?<|endoftext|>\n<assistant>\n");
});

test("a model without a chat template refuses chat messages", () => {
  const plain = new TextCodec(tokenizer, null, special);
  assert.throws(() => plain.renderChat([{ role: "user", content: "Hi" }]), /no chat template/);
});
