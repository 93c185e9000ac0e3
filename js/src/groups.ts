/** Group token positions into the units a person reads: words, sentences, paragraphs (runtime/groups.py).
 *
 * Spans are code point indices of the text, and the patterns are Python's, written for JS: ``\w`` is Unicode
 * letters, digits and ``_``, ``\s`` Python's whitespace, and ``$`` matches at the end or before a final newline. */

import { CodeText, SPACE, isSpace, strip } from "./chars.js";
import type { Span } from "./offsets.js";

const WORD = "[\\p{L}\\p{N}_]";
const END = "(?=\\n?$)";
const PATTERNS: Record<string, string> = {
  word: `${WORD}+(?:['’]${WORD}+)*|[^\\p{L}\\p{N}_${SPACE}]+`,
  // a sentence ends at its punctuation, or at a blank line (so that sentences nest in paragraphs), or at the end
  sentence: `[^${SPACE}][^]*?(?:[.!?]+(?=[${SPACE}]|$)|(?=\\n[${SPACE}]*\\n)|${END})`,
  paragraph: `[^${SPACE}][^]*?(?=\\n[${SPACE}]*\\n|${END})`,
};

export interface Group {
  start: number;
  end: number;
  positions: number[];
}

/** Character spans of ``text`` at ``granularity`` (word, sentence or paragraph), only inside ``within`` when
 * given (e.g. the contents of chat messages). */
export function textSpans(text: CodeText, granularity: string, within: Span[] | null = null): Span[] {
  const pattern = PATTERNS[granularity];
  if (pattern === undefined) throw new Error(`unknown granularity ${JSON.stringify(granularity)}`);
  const pieces: Span[] = [];
  for (const [lo, hi] of within ?? [[0, text.length]]) {
    const regex = new RegExp(pattern, "gu");
    const region = text.text.slice(0, text.utf16(hi)); // Python's finditer(text, lo, hi)
    regex.lastIndex = text.utf16(lo);
    for (let m = regex.exec(region); m !== null; m = regex.exec(region)) {
      pieces.push([text.codePoint(m.index), text.codePoint(m.index + m[0].length)]);
    }
  }
  return pieces.filter(([a, b]) => strip(text.slice(a, b))).map(([a, b]) => stripSpan(text, a, b));
}

/** Shrink a span to exclude surrounding whitespace. */
function stripSpan(text: CodeText, start: number, end: number): Span {
  while (start < end && isSpace(text.chars[start])) start++;
  while (end > start && isSpace(text.chars[end - 1])) end--;
  return [start, end];
}

/** Where the visible text of ``text[start:end]`` begins: its first non-whitespace character (``end`` if none).
 * Byte-level BPE tokens carry their leading space; a token belongs where its visible text lies. */
function visibleStart(text: CodeText, start: number, end: number): number {
  while (start < end && isSpace(text.chars[start])) start++;
  return start;
}

/** Assign tokens (by character offsets into ``text``) to the character spans their visible text falls in. */
export function tokenGroups(offsets: Span[], text: CodeText, spans: Span[]): Group[] {
  const groups: Group[] = [];
  for (const [lo, hi] of spans) {
    const positions: number[] = [];
    offsets.forEach(([first, end], position) => {
      const start = visibleStart(text, first, end);
      if (start < end && start < hi && end > lo) positions.push(position);
    });
    if (positions.length) groups.push({ start: lo, end: hi, positions });
  }
  return groups;
}

/** The target's tokens (by character ``offsets`` into the target ``text``) as columns of relevance: one per token,
 * one per sentence of the target, or one for all of it ("complete"). A token that starts no sentence's visible
 * text (whitespace) joins the sentence before it. */
export function targetColumns(text: CodeText, offsets: Span[], granularity: string): number[][] {
  if (granularity === "token") return offsets.map((_, t) => [t]);
  if (granularity === "complete") return [offsets.map((_, t) => t)];
  const found = textSpans(text, "sentence").map(([a]) => a);
  const starts = found.length ? found : [0];
  const columns: number[][] = starts.map(() => []);
  offsets.forEach(([start, end], t) => {
    const at = visibleStart(text, start, end);
    columns[Math.max(0, starts.filter((s) => s <= at).length - 1)].push(t);
  });
  return columns.filter((c) => c.length);
}
