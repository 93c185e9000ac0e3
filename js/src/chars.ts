/** Text indexed by code points, as Python indexes a str: every character span in an explanation counts code
 * points (not UTF-16 units), so that JS and Python files agree on texts outside the Basic Multilingual Plane. */

/** Python's ``str.isspace`` characters (JS ``\s`` differs: it takes U+FEFF and leaves out U+001C to U+001F). */
export const SPACE = "\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const IS_SPACE = new RegExp(`^[${SPACE}]$`, "u");

export function isSpace(char: string): boolean {
  return IS_SPACE.test(char);
}

/** Python's ``str.strip()``: the text without surrounding whitespace. */
export function strip(text: string): string {
  return text.replace(new RegExp(`^[${SPACE}]+|[${SPACE}]+$`, "gu"), "");
}

export class CodeText {
  readonly text: string;
  /** the code points, one string each */
  readonly chars: readonly string[];
  /** UTF-16 index of each code point, and the text's UTF-16 length at the end */
  private readonly units: readonly number[];

  constructor(text: string) {
    this.text = text;
    this.chars = Array.from(text);
    const units = [0];
    for (const char of this.chars) units.push(units[units.length - 1] + char.length);
    this.units = units;
  }

  get length(): number {
    return this.chars.length;
  }

  /** Code points ``start`` to ``end`` (Python's ``text[start:end]``). */
  slice(start: number, end: number = this.length): string {
    return this.text.slice(this.utf16(start), this.utf16(Math.min(end, this.length)));
  }

  /** The UTF-16 index of code point ``index``. */
  utf16(index: number): number {
    return this.units[Math.max(0, Math.min(index, this.length))];
  }

  /** The code point index at UTF-16 index ``unit`` (at a code point boundary). */
  codePoint(unit: number): number {
    let lo = 0;
    let hi = this.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.units[mid] < unit) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Python's ``text.find(needle, from)``: the code point index of ``needle`` at or after ``from``, or -1. */
  find(needle: string, from: number): number {
    const at = this.text.indexOf(needle, this.utf16(from));
    return at < 0 ? -1 : this.codePoint(at);
  }
}

/** Python's ``len(text)``: the number of code points. */
export function cpLength(text: string): number {
  return Array.from(text).length;
}
