import { performance } from 'node:perf_hooks';
import { tinyModel } from '../models/tinyModel.js';
import { parseFilterRules } from '../server/filter/loadFilterRules.js';
import { StreamingMatcher } from '../server/filter/StreamingMatcher.js';
import type { Benchmark } from './Benchmark.js';
import { cell } from './renderTable.js';
import { summarize } from './summarize.js';

/** Tokens per reply, as the server's default maxTokens. */
const REPLY_TOKENS = 512;
const RULE_COUNTS = [0, 10, 100] as const;

/** Regexes of the kinds a rules file holds (account numbers, codes, names); none matches the passage. */
const REGEXES = [
  '\\b(?:acct|account)[ -]?[0-9]{6,12}\\b',
  '\\b[0-9]{3}-[0-9]{2}-[0-9]{4}\\b',
  '[A-Z]{2}[0-9]{2}[A-Z0-9]{10,30}',
  'sec(?:ret|urity) code:? [0-9]+',
  '\\bproject [A-Z][a-z]+bird\\b',
];

/**
 * `count` rules, as an operator might write them: seven keywords for every three regexes, output
 * rules all, one of them (a keyword of the passage) redacting on every loop of the reply so the
 * redaction path runs too.
 */
function rulesFile(count: number): string {
  const lines: string[] = [];
  for (let index = 0; index < count; index++) {
    if (index === 0) {
      lines.push(JSON.stringify({ label: 'place', match: { keyword: 'harbor' }, applies: 'output', action: 'redact' }));
    } else if (index % 10 < 7) {
      lines.push(JSON.stringify({ label: `keyword ${index}`, match: { keyword: `codeword${index}` }, applies: 'output', action: index % 2 === 0 ? 'refuse' : 'flag' }));
    } else {
      lines.push(JSON.stringify({ label: `regex ${index}`, match: { regex: `${REGEXES[index % REGEXES.length] ?? 'x'}|marker${index}` }, applies: 'output', action: 'redact' }));
    }
  }
  return lines.join('\n');
}

/** The tiny model's reply of REPLY_TOKENS tokens, in its tokens: each passage word (with its space) is one. */
function replyTokens(): string[] {
  const words = tinyModel.passage.split(' ');
  return Array.from({ length: REPLY_TOKENS }, (_, index) => `${index === 0 ? '' : ' '}${words[index % words.length] ?? ''}`);
}

/**
 * The output filter's cost per streamed token, in process: every token of a 512-token reply
 * pushed through a StreamingMatcher with 0, 10 and 100 rules (the cost ChatCore adds to each
 * token it hands on), and the hold-back each rule set means for the stream.
 */
export const contentFilter: Benchmark = {
  name: 'content-filter',
  summary: 'the output content filter: added latency per token with 0, 10 and 100 rules, and its hold-back',
  async run(context) {
    const replies = context.quick ? 20 : 100;
    const tokens = replyTokens();
    context.progress(`content-filter: ${replies} replies of ${REPLY_TOKENS} tokens per rule set`);
    const rows: string[][] = [['rules', 'hold-back (chars)', 'p50 µs/token', 'p99 µs/token', 'max µs/token', 'µs per reply (p50)']];
    const data: Array<Record<string, unknown>> = [];
    for (const count of RULE_COUNTS) {
      const rules = parseFilterRules(rulesFile(count), `${count} rules`);
      const perToken: number[] = [];
      const perReply: number[] = [];
      // One untimed reply first, so the timings are of compiled code and warm RE2 caches.
      for (let reply = -1; reply < replies; reply++) {
        const matcher = new StreamingMatcher(rules);
        const replyStarted = performance.now();
        for (const token of tokens) {
          const started = performance.now();
          matcher.push(token);
          if (reply >= 0) perToken.push((performance.now() - started) * 1000);
        }
        matcher.end();
        if (reply >= 0) perReply.push((performance.now() - replyStarted) * 1000);
      }
      const token = summarize(perToken);
      const holdBack = new StreamingMatcher(rules).holdBack;
      rows.push([String(count), String(holdBack), cell(token.p50, 1), cell(token.p99, 1), cell(token.max, 0), cell(summarize(perReply).p50, 0)]);
      data.push({ rules: count, holdBack, perTokenUs: token, perReplyUs: summarize(perReply) });
    }
    return {
      tables: [
        {
          title: `Output content filter: added latency per token (${replies} replies of ${REPLY_TOKENS} tokens, in process)`,
          rows,
          notes: [
            'Seven keywords for every three regexes (maxLength 64, the default); 0 rules is the matcher alone (with no output rule the server skips it).',
            "hold-back: the most characters kept from the client while a match could still complete: the longest rule's window minus one, so at most 64 characters with default regexes, about ten words of the reply.",
          ],
        },
      ],
      data,
    };
  },
};
