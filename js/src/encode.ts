/** Text to positions: the prompt (plain text or chat messages) and the target as fed, with every token's span
 * (runtime/encode.py). */

import { CodeText, cpLength } from "./chars.js";
import type { Span } from "./offsets.js";
import type { Prompt } from "./request.js";
import type { TextCodec } from "./text.js";
import type { Token } from "./units.js";

/** The prompt as fed: its text, ids, character offsets, and the character ranges worth explaining. */
export interface EncodedPrompt {
  text: string;
  ids: number[];
  offsets: Span[];
  /** null: all of it; for chat prompts, the messages' contents */
  content: Span[] | null;
}

/** Tokenize a text prompt, or render chat messages with the model's template and find their contents. */
export function encodePrompt(codec: TextCodec, prompt: Prompt): EncodedPrompt {
  if (typeof prompt === "string") {
    const { ids, offsets } = codec.encode(prompt, true);
    return { text: prompt, ids, offsets, content: null };
  }
  const text = codec.renderChat(prompt);
  const code = new CodeText(text);
  const content: Span[] = [];
  let cursor = 0;
  for (const message of prompt) {
    const body = message.content;
    const at = body ? code.find(body, cursor) : -1;
    if (at >= 0) {
      content.push([at, at + cpLength(body)]);
      cursor = at + cpLength(body);
    }
  }
  const { ids, offsets } = codec.encode(text, false);
  return { text, ids, offsets, content };
}

/** The ids of a completion, tokenized as a continuation (no special tokens). */
export function encodeTarget(codec: TextCodec, target: string): number[] {
  const ids = codec.ids(target);
  if (!ids.length) throw new Error("the target is empty after tokenization");
  return ids;
}

/** Every fed position (prompt, then target without its last token) with its text and character span. */
export function fedTokens(codec: TextCodec, prompt: EncodedPrompt, targetIds: number[]): Token[] {
  const texts = codec.tokenTexts([...prompt.ids, ...targetIds.slice(0, -1)]);
  const tokens: Token[] = prompt.ids.map((_, i) => ({
    text: texts[i],
    start: prompt.offsets[i][0],
    end: prompt.offsets[i][1],
    segment: "prompt",
  }));
  let start = 0;
  for (let i = 0; i < targetIds.length - 1; i++) {
    const end = cpLength(codec.decode(targetIds.slice(0, i + 1)));
    tokens.push({ text: texts[prompt.ids.length + i], start, end, segment: "target" });
    start = end;
  }
  return tokens;
}
