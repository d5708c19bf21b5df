import { readFile } from 'node:fs/promises';
import { RE2JS } from 're2js';
import * as z from 'zod/mini';
import { ConfigError } from '../config.js';
import { DEFAULT_REGEX_MAX_LENGTH, DEFAULT_REPLACEMENT, MAX_MATCH_LENGTH, type FilterRule } from './FilterRule.js';

/** A rules file that cannot be used: the message names the file and, for a bad rule, its line. Exits 2 like any bad setting. */
export class FilterRulesError extends ConfigError {
  override name = 'FilterRulesError';
}

const label = z.string().check(
  z.minLength(1, 'must not be empty'),
  z.maxLength(64, 'must be at most 64 characters'),
  z.regex(/^[\p{L}\p{N} _.:/-]+$/u, 'may hold letters, digits, spaces and _ . : / - only'),
);

/** One line of the rules file (JSON Lines). Unknown keys are refused, so a typo never goes unnoticed. */
const RuleLine = z.strictObject({
  label,
  match: z.union(
    [
      z.strictObject({ keyword: z.string().check(z.minLength(1, 'must not be empty'), z.maxLength(MAX_MATCH_LENGTH, `must be at most ${MAX_MATCH_LENGTH} characters`)) }),
      z.strictObject({ regex: z.string().check(z.minLength(1, 'must not be empty'), z.maxLength(4096, 'must be at most 4096 characters')) }),
    ],
    { error: 'must be {"keyword": "..."} or {"regex": "..."}' },
  ),
  applies: z.enum(['input', 'output', 'both']),
  action: z.enum(['refuse', 'redact', 'flag']),
  caseSensitive: z.optional(z.boolean()),
  /** Keywords only: false matches inside words too. */
  wholeWord: z.optional(z.boolean()),
  replacement: z.optional(z.string().check(z.maxLength(256, 'must be at most 256 characters'))),
  /** Regexes only: the longest text a match spans. */
  maxLength: z.optional(z.int().check(z.gte(1), z.lte(MAX_MATCH_LENGTH))),
});

/** Reads and validates the rules file; throws FilterRulesError naming the file (and the line). */
export async function loadFilterRules(path: string): Promise<FilterRule[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new FilterRulesError(`--filter-rules ${path}: cannot read the file${code === undefined ? '' : ` (${code})`}`);
  }
  return parseFilterRules(text, path);
}

/**
 * Parses a rules file: one JSON object per line; blank lines and lines starting with `#` are
 * skipped. Every rule is checked here, once, so a bad one stops the start instead of a request:
 * its shape, a regex the linear-time engine can compile (no backreferences, no lookaround),
 * a pattern that cannot match the empty string, and labels unique in the file.
 */
export function parseFilterRules(text: string, fileName: string): FilterRule[] {
  const rules: FilterRule[] = [];
  const labels = new Map<string, number>();
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, index) => {
    const line = index + 1;
    const source = raw.trim();
    if (source === '' || source.startsWith('#')) return;
    const fail = (what: string): never => {
      throw new FilterRulesError(`--filter-rules ${fileName} line ${line}: ${what}`);
    };
    let value: unknown;
    try {
      value = JSON.parse(source);
    } catch (error) {
      fail(`not a JSON object (${error instanceof Error ? error.message : String(error)})`);
    }
    const parsed = RuleLine.safeParse(value);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      fail(`${issue?.path.map(String).join('.') || 'rule'}: ${issue?.message ?? 'invalid'}`);
      return;
    }
    const rule = parsed.data;
    const earlier = labels.get(rule.label);
    if (earlier !== undefined) fail(`label "${rule.label}" is already used on line ${earlier}; labels name rules in logs and metrics, so each must be unique`);
    labels.set(rule.label, line);
    const keyword = 'keyword' in rule.match ? rule.match.keyword : undefined;
    if (keyword !== undefined && rule.maxLength !== undefined) fail('maxLength is for regex rules (a keyword is as long as it is)');
    if (keyword === undefined && rule.wholeWord !== undefined) fail('wholeWord is for keyword rules (write \\b in the regex instead)');
    if (rule.replacement !== undefined && rule.action !== 'redact') fail('replacement is for redact rules');
    const flags = rule.caseSensitive === true ? 0 : RE2JS.CASE_INSENSITIVE;
    let pattern: RE2JS;
    try {
      pattern = RE2JS.compile(keyword === undefined ? (rule.match as { regex: string }).regex : RE2JS.quote(keyword), flags);
    } catch (error) {
      fail(`match.regex: ${describeRegexError(error)}`);
      return;
    }
    if (pattern.test('')) fail('match.regex: matches the empty string, so it would match everywhere');
    rules.push({
      label: rule.label,
      line,
      kind: keyword === undefined ? 'regex' : 'keyword',
      input: rule.applies !== 'output',
      output: rule.applies !== 'input',
      action: rule.action,
      replacement: rule.replacement ?? DEFAULT_REPLACEMENT,
      maxLength: keyword === undefined ? (rule.maxLength ?? DEFAULT_REGEX_MAX_LENGTH) : keyword.length,
      wholeWord: keyword !== undefined && rule.wholeWord !== false,
      pattern,
    });
  });
  return rules;
}

/** RE2's reason, with what to do when the pattern uses what a linear-time engine cannot have. */
function describeRegexError(error: unknown): string {
  const message = (error instanceof Error ? error.message : String(error)).replace(/^error parsing regexp: /, '');
  if (/`\(\?[=!]|`\(\?<[=!]|\(\?<[=!]/.test(message)) return `${message}: lookaround is not supported (the filter's regex engine runs in linear time, so it has no lookahead or lookbehind)`;
  if (/escape sequence: `\\[1-9]`/.test(message)) return `${message}: backreferences are not supported (the filter's regex engine runs in linear time, so it has none)`;
  return message;
}
