/** What an explanation is about: the fed tokens, and the units suppressed one per pass (runtime/units.py). */

import { CodeText } from "./chars.js";
import { textSpans, tokenGroups } from "./groups.js";
import type { Span } from "./offsets.js";

export type Segment = "prompt" | "target";

/** One fed token: its text, its character span in the prompt (or the target), and which of the two it is in. */
export interface Token {
  text: string;
  start: number;
  end: number;
  segment: Segment;
}

/** What one row of relevance is about: a token, a word or a sentence, suppressed in one pass; ``positions`` are
 * the fed positions it covers, ``start``/``end`` its character span in its segment. */
export interface Unit {
  text: string;
  start: number;
  end: number;
  segment: Segment;
  positions: number[];
}

/** The units to suppress: prompt groups (only inside ``within`` when given, e.g. chat message contents), then,
 * when ``withTarget``, the fed target tokens grouped alike. */
export function makeUnits(
  promptText: string,
  targetText: string,
  tokens: Token[],
  nPrompt: number,
  granularity: string,
  within: Span[] | null,
  withTarget: boolean,
): Unit[] {
  const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);
  const segments: [Segment, CodeText, number[], Span[] | null][] = [
    ["prompt", new CodeText(promptText), range(0, nPrompt), within],
  ];
  if (withTarget) {
    // only the fed part of the target (all but its last token) can be suppressed
    const fed = tokens.length > nPrompt ? new CodeText(targetText).slice(0, tokens[tokens.length - 1].end) : "";
    segments.push(["target", new CodeText(fed), range(nPrompt, tokens.length), null]);
  }
  const units: Unit[] = [];
  for (const [segment, text, positions, inside] of segments) {
    if (granularity === "token") {
      for (const p of positions) {
        const { start, end } = tokens[p];
        if (inside === null || inside.some(([lo, hi]) => lo < end && start < hi)) {
          units.push({ text: tokens[p].text, start, end, segment, positions: [p] });
        }
      }
      continue;
    }
    const offsets: Span[] = positions.map((p) => [tokens[p].start, tokens[p].end]);
    for (const group of tokenGroups(offsets, text, textSpans(text, granularity, inside))) {
      const members = group.positions.map((i) => positions[i]);
      const { start, end } = group;
      units.push({ text: text.slice(start, end), start, end, segment, positions: members });
    }
  }
  if (!units.length) throw new Error(`nothing to explain: no ${granularity} units in the prompt`);
  return units;
}
