/** What an explanation's scores cannot tell, one line each (runtime/search.py ``cover_warnings``). */

import { CodeText } from "./chars.js";
import type { Unit } from "./units.js";

/** Characters Python's ``str.isprintable()`` calls not printable (other than the space), which ``repr`` escapes:
 * controls, format characters (U+200B to U+200F, U+FEFF), separators but the space (U+00A0, U+2028, U+2029),
 * surrogates, private use and unassigned code points. */
const UNPRINTABLE = /^[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]$/u;

/** Python's ``repr`` of a string, for messages that quote text as Python's do. */
function pyRepr(text: string): string {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  const named: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };
  const escaped = Array.from(text, (c) => {
    if (c === "\\" || c === quote) return `\\${c}`;
    if (named[c]) return named[c];
    if (c === " " || !UNPRINTABLE.test(c)) return c;
    const code = c.codePointAt(0) as number;
    if (code < 0x100) return `\\x${code.toString(16).padStart(2, "0")}`;
    if (code < 0x10000) return `\\u${code.toString(16).padStart(4, "0")}`;
    return `\\U${code.toString(16).padStart(8, "0")}`;
  });
  return `${quote}${escaped.join("")}${quote}`;
}

/** One line per unit that covers every prompt position (runtime/search.py ``cover_warnings``): under log-additive
 * suppression its score for the first target token is zero by construction. */
export function coverWarnings(granularity: string, units: Unit[], nPrompt: number, mode: string): string[] {
  if (mode !== "log_additive") return [];
  return units
    .filter((unit) => {
      const mine = new Set(unit.positions);
      return Array.from({ length: nPrompt }, (_, p) => p).every((p) => mine.has(p));
    })
    .map(
      (unit) =>
        `${granularity} ${pyRepr(new CodeText(unit.text).slice(0, 40))} covers the whole prompt, so suppressing it ` +
        "cannot change the first target token (softmax ignores a shift of all its inputs): its score says nothing " +
        "about it",
    );
}
