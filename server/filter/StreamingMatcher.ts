import { RE2JS } from 're2js';
import { FilterAction, windowOf, type FilterRule } from './FilterRule.js';

/** One match the matcher acted on. `text` is the matched text: for the log only when content logging is on. */
export interface FilterMatch {
  readonly rule: FilterRule;
  readonly text: string;
}

/** What one `push` or `end` lets out. */
export interface FilterStep {
  /** Text to show now: the input with redactions applied, minus what is still held back. */
  readonly text: string;
  /** The matches acted on in this step, in text order (a refusal last). */
  readonly matches: readonly FilterMatch[];
  /** The refuse rule that matched: the stream ends here, and the matched text and all after it are never let out. */
  readonly refusedBy?: FilterRule;
}

/** A noncharacter: never in a reply, matched by no keyword, and a non-word character for `\b`. */
const NOT_YET = '\uffff';
const WORD_BEFORE = /[\p{L}\p{M}\p{N}_]$/u;
const WORD_AFTER = /^[\p{L}\p{M}\p{N}_]/u;

/**
 * Applies rules to text that arrives in pieces (a streamed reply), so that a match split across
 * pieces is found exactly as in the whole text.
 *
 * It holds back the last `holdBack` characters, the fewest that a match starting there could
 * still need: the longest rule window (a keyword's length, plus one character after a whole-word
 * keyword; a regex's `maxLength`) minus one. Every match that starts before the held-back tail is
 * therefore complete, whatever comes next, and is acted on at once: `flag` lets the text through,
 * `redact` lets the replacement through, `refuse` stops the stream, and neither the matched text
 * nor anything after it is let out. `end` decides the tail as the text's end.
 *
 * Invariants: the concatenation of every step's `text` is the whole input with each match
 * handled, the same however the input was cut; at most `holdBack` characters are held between
 * calls; after a refusal every call lets out nothing.
 */
export class StreamingMatcher {
  readonly holdBack: number;
  private pending = '';
  /** The last character let through or consumed, so `\b` and whole words see what came before the pending text. */
  private before = '';
  private refused: FilterRule | undefined;

  private readonly any: RE2JS | undefined;

  constructor(private readonly rules: readonly FilterRule[]) {
    const compiled = compiledFor(rules);
    this.holdBack = compiled.holdBack;
    this.any = compiled.any;
  }

  /** Characters held back now, waiting to be decided. */
  get held(): number {
    return this.pending.length;
  }

  get refusedBy(): FilterRule | undefined {
    return this.refused;
  }

  push(chunk: string): FilterStep {
    return this.step(chunk, false);
  }

  /** The text ended (after `chunk`): decides and lets out what was held back. */
  end(chunk = ''): FilterStep {
    return this.step(chunk, true);
  }

  private step(chunk: string, final: boolean): FilterStep {
    if (this.refused) return { text: '', matches: [] };
    this.pending += chunk;
    let out = '';
    const matches: FilterMatch[] = [];
    for (;;) {
      // Matches starting before `limit` are decided: the text after them covers every window.
      let limit = final ? this.pending.length : this.pending.length - this.holdBack;
      // Never cut between the halves of a surrogate pair: each piece let out is whole UTF-16.
      if (!final && limit > 0 && isHighSurrogate(this.pending.charCodeAt(limit - 1))) limit--;
      if (limit <= 0) break;
      const found = this.leftmost(limit, final);
      if (!found) {
        out += this.pending.slice(0, limit);
        this.consume(limit);
        break;
      }
      const { rule, start, end } = found;
      const text = this.pending.slice(start, end);
      out += this.pending.slice(0, start);
      matches.push({ rule, text });
      if (rule.action === FilterAction.refuse) {
        this.refused = rule;
        this.pending = '';
        return { text: out, matches, refusedBy: rule };
      }
      out += rule.action === FilterAction.redact ? rule.replacement : text;
      this.consume(end);
    }
    return { text: out, matches };
  }

  private consume(count: number): void {
    if (count <= 0) return;
    const gone = this.pending.slice(0, count);
    this.before = gone.slice(-2);
    this.pending = this.pending.slice(count);
  }

  /** The leftmost match of any rule that starts before `limit` (on a tie, the rule listed first). */
  private leftmost(limit: number, final: boolean): { rule: FilterRule; start: number; end: number } | undefined {
    // Before the end, a sentinel stands for the text still to come, so `$` cannot match at the end
    // of what has arrived so far. No decided match reaches it (each fits in its window).
    const text = this.before + this.pending + (final ? '' : NOT_YET);
    const offset = this.before.length;
    const available = this.pending.length;
    // Most of a reply matches no rule: one pass of the combined pattern says so for all of them.
    if (this.any && !this.any.test(text)) return undefined;
    let best: { rule: FilterRule; start: number; end: number } | undefined;
    for (const rule of this.rules) {
      if (!rule.pattern.test(text)) continue;
      const matcher = rule.pattern.matcher(text);
      let from = offset;
      while (from <= text.length && matcher.find(from)) {
        const start = matcher.start() - offset;
        // A match longer than its rule's maxLength may run into the sentinel: it ends where the text does.
        const end = Math.min(matcher.end() - offset, available);
        if (start >= limit || (best && start >= best.start)) break;
        if (!rule.wholeWord || isWholeWord(text, start + offset, end + offset, final)) {
          best = { rule, start, end };
          break;
        }
        from = start + offset + 1;
      }
    }
    return best;
  }
}

interface CompiledRules {
  readonly holdBack: number;
  /** Every rule's pattern in one alternation: it matches where any rule does (before the whole-word check). */
  readonly any: RE2JS | undefined;
}

/** Compiled once per list of rules (the filter keeps its lists), not once per reply. */
const compiledRules = new WeakMap<readonly FilterRule[], CompiledRules>();

function compiledFor(rules: readonly FilterRule[]): CompiledRules {
  let compiled = compiledRules.get(rules);
  if (!compiled) {
    compiled = { holdBack: Math.max(0, ...rules.map((rule) => windowOf(rule) - 1)), any: combine(rules) };
    compiledRules.set(rules, compiled);
  }
  return compiled;
}

/** The rules' patterns as one RE2 alternation, each with its own case flag; undefined for fewer than two rules, or if RE2 refuses the whole (then each rule is tried alone). */
function combine(rules: readonly FilterRule[]): RE2JS | undefined {
  if (rules.length < 2) return undefined;
  try {
    return RE2JS.compile(rules.map((rule) => `(?${(rule.pattern.flags() & RE2JS.CASE_INSENSITIVE) !== 0 ? 'i' : ''}:${rule.pattern.pattern()})`).join('|'));
  } catch {
    return undefined;
  }
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

/** Whether text[start, end) stands alone: no word character touches it (the text's ends count as non-word when final). */
function isWholeWord(text: string, start: number, end: number, final: boolean): boolean {
  if (WORD_BEFORE.test(text.slice(Math.max(0, start - 2), start))) return false;
  // Not final and nothing after the match yet: cannot happen for a decided start (the window covers one more character).
  if (end >= text.length) return final;
  return !WORD_AFTER.test(text.slice(end, end + 2));
}
