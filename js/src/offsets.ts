/** Each token's character span in the encoded text, as Python's ``tokenizers`` reports it (``Encoding.offsets``):
 * @huggingface/tokenizers has no offsets, so they are found here by walking the text's UTF-8 bytes with each
 * token's bytes. Spans count code points, as Python does. */

import { CodeText } from "./chars.js";

export type Span = [number, number];

/** An added token as tokenizer.json lists it (``added_tokens``). */
export interface AddedToken {
  content: string;
  /** it swallows the whitespace on its left / right: Python's span then covers that whitespace */
  lstrip: boolean;
  rstrip: boolean;
  /** matched in the normalized text (so a normalizer's Prepend does not start again after it) */
  normalized: boolean;
}

/** What the tokenizer.json says about how tokens map back to text. */
export interface TokenizerLayout {
  /** byte-level BPE (GPT-2 style): every token is a string of byte symbols */
  byteLevel: boolean;
  /** a ByteLevel post-processor trims spaces off the spans (``trim_offsets``); with ``add_prefix_space`` */
  trim: { addPrefixSpace: boolean } | null;
  /** a normalizer prepends ``▁`` to every piece of text between (unnormalized) added tokens (Llama-2's Prepend) */
  prepend: boolean;
  /** the added tokens by id */
  added: Map<number, AddedToken>;
}

interface Component {
  type?: string;
  trim_offsets?: boolean;
  add_prefix_space?: boolean;
  prepend?: string;
  pretokenizers?: Component[];
  processors?: Component[];
  normalizers?: Component[];
}

interface AddedTokenJson {
  id: number;
  content: string;
  lstrip?: boolean;
  rstrip?: boolean;
  normalized?: boolean;
  special?: boolean;
}

function flatten(component: Component | null | undefined): Component[] {
  if (!component) return [];
  const inner = component.pretokenizers ?? component.processors ?? component.normalizers;
  return inner ? inner.flatMap(flatten) : [component];
}

export function tokenizerLayout(json: {
  normalizer?: Component | null;
  pre_tokenizer?: Component | null;
  post_processor?: Component | null;
  added_tokens?: AddedTokenJson[];
}): TokenizerLayout {
  const trimming = flatten(json.post_processor).find((c) => c.type === "ByteLevel" && c.trim_offsets);
  const added = new Map<number, AddedToken>();
  for (const t of json.added_tokens ?? []) {
    added.set(t.id, {
      content: t.content,
      lstrip: Boolean(t.lstrip),
      rstrip: Boolean(t.rstrip),
      normalized: t.normalized ?? !t.special, // Rust's default
    });
  }
  return {
    byteLevel: flatten(json.pre_tokenizer).some((c) => c.type === "ByteLevel"),
    trim: trimming ? { addPrefixSpace: Boolean(trimming.add_prefix_space) } : null,
    prepend: flatten(json.normalizer).some((c) => c.type === "Prepend" && c.prepend === "\u2581"),
    added,
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
  added: AddedToken | null;
}

/** Rust's ``char::is_whitespace`` (what added tokens strip and what trimming removes). */
const WHITESPACE = /^\p{White_Space}$/u;

/** The span of every token of ``tokens``, the tokens that the model's pipeline makes of ``text`` (no special tokens
 * added by a post-processor), as Rust ``tokenizers`` aligns them: an added token's span covers the whitespace it
 * strips; a ``▁`` that SentencePiece prepended (Metaspace, or a Prepend normalizer) takes the span of the character
 * it was put before. Throws when a token's bytes do not follow in the text (a normalizer changed it). */
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
  const push = (span: Span, token: string): void => {
    spans.push(layout.trim ? trimmed(span, token, spans.length, layout.trim.addPrefixSpace) : span);
  };
  let cursor = 0; // bytes consumed
  let pieceStart = true; // at the start of a piece that a Prepend normalizer prepends ``▁`` to
  for (const { token, added } of tokens) {
    const from = charOf[cursor] ?? code.length;
    const at = added === null ? -1 : code.find(added.content, from);
    // an added token is where its content is, past whitespace; else the model made it (a byte piece ``<0xNN>``)
    if (added !== null && at >= 0 && Array.from(code.slice(from, at)).every((c) => WHITESPACE.test(c))) {
      let [start, end] = [at, at + Array.from(added.content).length];
      if (added.lstrip) while (start > from && WHITESPACE.test(code.chars[start - 1])) start--;
      if (added.rstrip) while (end < code.length && WHITESPACE.test(code.chars[end])) end++;
      push([start, end], code.slice(start, end)); // Rust's token: the text it matched, whitespace and all
      cursor = byteAt(end);
      if (!added.normalized) pieceStart = true;
      continue;
    }
    const start = cursor;
    let prepended = layout.prepend && pieceStart; // its first space is not in the text
    pieceStart = false;
    for (const b of tokenBytes(token, layout.byteLevel)) {
      if (prepended && b === 0x20) {
        prepended = false;
        continue;
      }
      prepended = false;
      if (bytes[cursor] === b) cursor += 1;
      else if (b !== 0x20 || layout.byteLevel) {
        throw new Error(`cannot align token ${JSON.stringify(token)} with the text: offsets need an unnormalized text`);
      } // else: a space that a Metaspace pre-tokenizer put before a word (it never puts one before a space)
    }
    const here = charOf[start] ?? code.length;
    // a prepended ``▁`` alone is aligned with the character it was put before
    const span: Span = cursor > start ? [here, charOf[cursor - 1] + 1] : [here, Math.min(here + 1, code.length)];
    push(span, token);
  }
  return spans;
}

/** Rust ``tokenizers``' ByteLevel post-processor with ``trim_offsets``: leading and trailing spaces (``Ġ`` or
 * whitespace) off a span. */
function trimmed(span: Span, token: string, index: number, addPrefixSpace: boolean): Span {
  const symbols = Array.from(token);
  const space = (symbol: string): boolean => symbol === "\u0120" || WHITESPACE.test(symbol);
  let leading = 0;
  while (leading < symbols.length && space(symbols[leading])) leading++;
  let trailing = 0;
  while (trailing < symbols.length && space(symbols[symbols.length - 1 - trailing])) trailing++;
  let [start, end] = span;
  if (leading > 0) {
    if ((index === 0 || start === 0) && addPrefixSpace && leading === 1) leading = 0;
    start = Math.min(start + leading, end);
  }
  if (trailing > 0 && end >= trailing) end = Math.max(end - trailing, start);
  return [start, end];
}
