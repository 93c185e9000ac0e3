/** Words, sentences and paragraphs as Python's runtime/groups.py cuts them (expected spans from Python's regexes). */

import assert from "node:assert/strict";
import { test } from "node:test";

import { CodeText } from "../src/chars.js";
import { textSpans, tokenGroups } from "../src/groups.js";

const TEXT = "Héllo wörld, it’s 3.5 o'clock! 😀 Yes.\n\nA heading\n\nNext one? Done";

test("words", () => {
  const text = new CodeText(TEXT);
  const words = textSpans(text, "word").map(([a, b]) => text.slice(a, b));
  assert.deepEqual(words, [
    ..."Héllo wörld , it’s 3 . 5 o'clock ! 😀 Yes .".split(" "),
    ..."A heading Next one ? Done".split(" "),
  ]);
});

test("sentences end at punctuation before whitespace and at blank lines; spans count code points", () => {
  const text = new CodeText(TEXT);
  const spans = textSpans(text, "sentence");
  assert.deepEqual(spans.map(([a, b]) => text.slice(a, b)), [
    "Héllo wörld, it’s 3.5 o'clock!",
    "😀 Yes.",
    "A heading",
    "Next one?",
    "Done",
  ]);
  assert.deepEqual(spans[1], [31, 37]); // after the emoji, a code point later than UTF-16 counts
});

test("paragraphs", () => {
  const text = new CodeText(TEXT);
  assert.deepEqual(textSpans(text, "paragraph").map(([a, b]) => text.slice(a, b)), [
    "Héllo wörld, it’s 3.5 o'clock! 😀 Yes.",
    "A heading",
    "Next one? Done",
  ]);
});

test("only inside the given ranges", () => {
  const text = new CodeText("<a>\nOne two.<b>\nThree.");
  assert.deepEqual(textSpans(text, "sentence", [[4, 12], [16, 22]]), [[4, 12], [16, 22]]);
  assert.deepEqual(textSpans(text, "sentence", [[4, 12]]), [[4, 12]]);
});

test("a token belongs to a group by its visible text; whitespace-only tokens to none", () => {
  const text = new CodeText("Hi there. Bye");
  const offsets: [number, number][] = [[0, 2], [2, 8], [8, 9], [9, 10], [10, 13]];
  assert.deepEqual(tokenGroups(offsets, text, textSpans(text, "sentence")), [
    { start: 0, end: 9, positions: [0, 1, 2] },
    { start: 10, end: 13, positions: [4] },
  ]);
});
