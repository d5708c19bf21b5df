import type { RE2JS } from 're2js';

/** What a rule does when it matches. */
export const FilterAction = {
  /** End the request (input) or the reply (output) with `content_filtered`. */
  refuse: 'refuse',
  /** Replace the matched text and go on. */
  redact: 'redact',
  /** Only log the match (an audit event). */
  flag: 'flag',
} as const;
export type FilterAction = (typeof FilterAction)[keyof typeof FilterAction];

/** Which text a rule screens: the user's (input) or the model's (output). */
export const FilterDirection = { input: 'input', output: 'output' } as const;
export type FilterDirection = (typeof FilterDirection)[keyof typeof FilterDirection];

export const DEFAULT_REPLACEMENT = '[redacted]';
/** A regex rule's longest match, in UTF-16 code units, unless the rule says `maxLength`. */
export const DEFAULT_REGEX_MAX_LENGTH = 64;
/** The most a rule may say in `maxLength` (or a keyword be long): it bounds the output filter's hold-back. */
export const MAX_MATCH_LENGTH = 1024;

/**
 * One validated rule of the rules file, its pattern compiled by RE2 (linear time, whatever the
 * input: no backtracking).
 *
 * Invariants: `pattern` never matches the empty string; `maxLength` >= 1 is the longest text a
 * match is assumed to span (a keyword's own length); `wholeWord` only on keywords.
 */
export interface FilterRule {
  readonly label: string;
  /** The line of the rules file it came from (1-based), for messages. */
  readonly line: number;
  readonly kind: 'keyword' | 'regex';
  readonly input: boolean;
  readonly output: boolean;
  readonly action: FilterAction;
  readonly replacement: string;
  readonly maxLength: number;
  /** A keyword matches only between non-word characters (Unicode letters, marks, digits, `_`) or the text's ends. */
  readonly wholeWord: boolean;
  readonly pattern: RE2JS;
}

/**
 * How many characters after a match's start the streaming matcher must have seen to decide it:
 * its longest match, and one more for a whole-word keyword (the character after it must be a
 * non-word character).
 */
export function windowOf(rule: FilterRule): number {
  return rule.maxLength + (rule.wholeWord ? 1 : 0);
}
