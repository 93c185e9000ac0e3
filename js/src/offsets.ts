/** Each token's character span in the encoded text, as Python's ``tokenizers`` reports it (``Encoding.offsets``):
 * @huggingface/tokenizers has no offsets, so they are found here by walking the text's UTF-8 bytes with each
 * token's bytes. Spans count code points, as Python does. */

import { CodeText } from "./chars.js";

export type Span = [number, number];

/** What the tokenizer.json says about how tokens map back to text. */
export interface TokenizerLayout {
  /** byte-level BPE (GPT-2 style): every token is a string of byte symbols */
  byteLevel: boolean;
  /** a ByteLevel post-processor trims spaces off the spans (``trim_offsets``); with ``add_prefix_space`` */
  trim: { addPrefixSpace: boolean } | null;
}

interface Component {
  type?: string;
  trim_offsets?: boolean;
  add_prefix_space?: boolean;
  pretokenizers?: Component[];
  processors?: Component[];
}

function flatten(component: Component | null | undefined): Component[] {
  if (!component) return [];
  const inner = component.pretokenizers ?? component.processors;
  return inner ? inner.flatMap(flatten) : [component];
}

export function tokenizerLayout(json: {
  pre_tokenizer?: Component | null;
  post_processor?: Component | null;
}): TokenizerLayout {
  const trimming = flatten(json.post_processor).find((c) => c.type === "ByteLevel" && c.trim_offsets);
  return {
    byteLevel: flatten(json.pre_tokenizer).some((c) => c.type === "ByteLevel"),
    trim: trimming ? { addPrefixSpace: Boolean(trimming.add_prefix_space) } : null,
  };
}

/** GPT-2's map of bytes to printable characters, inverted: symbol -> byte. */
function byteSymbols(): Map<string, number> {
  const direct: number[] = [];
  for (let b = 33; b <= 126; b++) direct.push(b);
  for (let b = 161; b <= 172; b++) direct.push(b);
  for (let b = 174; b <= 255; b++) direct.push(b);
  const map = new Map<string, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    if (direct.includes(b)) map.set(String.fromCharCode(b), b);
    else map.set(String.fromCharCode(256 + extra++), b);
  }
  return map;
}

const SYMBOLS = byteSymbols();
const ENCODER = new TextEncoder();

/** A token's bytes in the text: byte-level symbols decoded, or the piece's UTF-8 (SentencePiece's ``▁`` as a
 * space, its byte-fallback pieces ``<0xNN>`` as that byte). */
function tokenBytes(token: string, byteLevel: boolean): number[] {
  if (byteLevel) {
    const bytes = Array.from(token, (symbol) => SYMBOLS.get(symbol));
    if (bytes.every((b) => b !== undefined)) return bytes as number[];
  }
  const fallback = /^<0x([0-9A-Fa-f]{2})>$/.exec(token);
  if (fallback) return [parseInt(fallback[1], 16)];
  return Array.from(ENCODER.encode(token.replaceAll("\u2581", " ")));
}

export interface OffsetToken {
  /** the token's string in the vocabulary */
  token: string;
  /** an added token: matched by its content, not by bytes */
  added: string | null;
}

/** The span of every token of ``tokens``, the tokens that the model's pipeline makes of ``text`` (no special tokens
 * added by a post-processor). Throws when a token's bytes do not follow in the text (a normalizer changed it). */
export function tokenOffsets(text: string, tokens: OffsetToken[], layout: TokenizerLayout): Span[] {
  const code = new CodeText(text);
  const bytes = ENCODER.encode(text);
  const charOf: number[] = []; // code point index of every byte
  code.chars.forEach((char, i) => {
    for (let k = ENCODER.encode(char).length; k > 0; k--) charOf.push(i);
  });
  const byteAt = (char: number): number => {
    const at = charOf.indexOf(char);
    return at < 0 ? bytes.length : at;
  };
  const spans: Span[] = [];
  let cursor = 0; // bytes consumed
  for (const { token, added } of tokens) {
    if (added !== null) {
      const at = code.find(added, charOf[cursor] ?? code.length);
      if (at < 0) throw new Error(`cannot find the added token ${JSON.stringify(added)} in the text`);
      const end = at + Array.from(added).length;
      spans.push([at, end]);
      cursor = byteAt(end);
      continue;
    }
    const start = cursor;
    for (const b of tokenBytes(token, layout.byteLevel)) {
      if (bytes[cursor] === b) cursor += 1;
      else if (b !== 0x20 || layout.byteLevel) {
        throw new Error(`cannot align token ${JSON.stringify(token)} with the text: offsets need an unnormalized text`);
      } // else: a space the tokenizer's normalizer put before a word (SentencePiece's prepended ``▁``)
    }
    const here = charOf[start] ?? code.length;
    const span: Span = cursor > start ? [here, charOf[cursor - 1] + 1] : [here, here];
    spans.push(layout.trim ? trimmed(span, token, spans.length, layout.trim.addPrefixSpace) : span);
  }
  return spans;
}

/** Rust ``tokenizers``' ByteLevel post-processor with ``trim_offsets``: leading and trailing spaces off a span. */
function trimmed(span: Span, token: string, index: number, addPrefixSpace: boolean): Span {
  const symbols = Array.from(token);
  let leading = 0;
  while (leading < symbols.length && symbols[leading] === "\u0120") leading++;
  let trailing = 0;
  while (trailing < symbols.length && symbols[symbols.length - 1 - trailing] === "\u0120") trailing++;
  let [start, end] = span;
  if (leading > 0) {
    if ((index === 0 || start === 0) && addPrefixSpace && leading === 1) leading = 0;
    start = Math.min(start + leading, end);
  }
  if (trailing > 0 && end >= trailing) end = Math.max(end - trailing, start);
  return [start, end];
}
