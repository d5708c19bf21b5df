import { RE2JS, type Matcher } from 're2js';
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
    const pending = this.pending;
    // Matches starting before `limit` are decided: the text after them covers every window.
    let limit = final ? pending.length : pending.length - this.holdBack;
    // Never cut between the halves of a surrogate pair: each piece let out is whole UTF-16.
    if (!final && limit > 0 && isHighSurrogate(pending.charCodeAt(limit - 1))) limit--;
    if (limit <= 0) return { text: '', matches: [] };
    const search = new Search(this.before, pending, final);
    let out = '';
    const matches: FilterMatch[] = [];
    let position = 0;
    // Most text matches no rule: one pass of the combined pattern says so for all of them.
    if (!this.any || this.any.test(search.text)) {
      for (;;) {
        const found = this.leftmost(search, position);
        if (!found || found.start >= limit) break;
        const { rule, start, end } = found;
        const text = pending.slice(start, end);
        out += pending.slice(position, start);
        matches.push({ rule, text });
        if (rule.action === FilterAction.refuse) {
          this.refused = rule;
          this.pending = '';
          return { text: out, matches, refusedBy: rule };
        }
        out += rule.action === FilterAction.redact ? rule.replacement : text;
        position = end;
      }
    }
    const decided = Math.max(position, limit);
    out += pending.slice(position, decided);
    this.before = (this.before + pending.slice(0, decided)).slice(-2);
    this.pending = pending.slice(decided);
    return { text: out, matches };
  }

  /** The leftmost match of any rule that starts at `position` or after (on a tie, the rule listed first). */
  private leftmost(search: Search, position: number): Found | undefined {
    let best: Found | undefined;
    for (const rule of this.rules) {
      const found = search.next(rule, position);
      if (found && (!best || found.start < best.start)) best = found;
    }
    return best;
  }
}

interface Found {
  readonly rule: FilterRule;
  /** In the pending text's coordinates. */
  readonly start: number;
  readonly end: number;
}

/**
 * One step's search: each rule's next match is found once and kept until the text handled passes
 * it, so a text with many matches costs each rule about one pass, not one pass per match.
 */
class Search {
  /** What came before (for `\b` and whole words), the pending text and, before the end, a sentinel. */
  readonly text: string;
  private readonly offset: number;
  private readonly available: number;
  private readonly known = new Map<FilterRule, Found | null>();
  private readonly matchers = new Map<FilterRule, Matcher>();

  constructor(
    before: string,
    pending: string,
    private readonly final: boolean,
  ) {
    // Before the end, a sentinel stands for the text still to come, so `$` cannot match at the end
    // of what has arrived so far. No decided match reaches it (each fits in its window).
    this.text = before + pending + (final ? '' : NOT_YET);
    this.offset = before.length;
    this.available = pending.length;
  }

  /** The rule's first match starting at `position` or after, or null. */
  next(rule: FilterRule, position: number): Found | null {
    const cached = this.known.get(rule);
    if (cached === null || (cached !== undefined && cached.start >= position)) return cached;
    const found = this.find(rule, position);
    this.known.set(rule, found);
    return found;
  }

  private find(rule: FilterRule, position: number): Found | null {
    let matcher = this.matchers.get(rule);
    if (!matcher) {
      if (!rule.pattern.test(this.text)) return null;
      matcher = rule.pattern.matcher(this.text);
      this.matchers.set(rule, matcher);
    }
    const { text, offset } = this;
    let from = position + offset;
    while (from <= text.length && matcher.find(from)) {
      const start = matcher.start() - offset;
      // A match longer than its rule's maxLength may run into the sentinel: it ends where the text does.
      const end = Math.min(matcher.end() - offset, this.available);
      if (!rule.wholeWord || isWholeWord(text, start + offset, end + offset, this.final)) return { rule, start, end };
      from = start + offset + 1;
    }
    return null;
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
