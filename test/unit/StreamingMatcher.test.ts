import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { parseFilterRules } from '../../server/filter/loadFilterRules.js';
import { StreamingMatcher, type FilterStep } from '../../server/filter/StreamingMatcher.js';

type RuleInput = Record<string, unknown>;
const rulesOf = (...rules: RuleInput[]) => parseFilterRules(rules.map((rule) => JSON.stringify({ applies: 'output', ...rule })).join('\n'), 'test.jsonl');
const keyword = (label: string, word: string, action: string, extra: RuleInput = {}): RuleInput => ({ label, match: { keyword: word }, action, ...extra });
const regex = (label: string, pattern: string, action: string, extra: RuleInput = {}): RuleInput => ({ label, match: { regex: pattern }, action, ...extra });

/** Feeds `chunks`, then ends: the text let out, every match and the refusal, as one step. */
function run(matcher: StreamingMatcher, chunks: readonly string[]): { text: string; steps: FilterStep[]; labels: string[]; refusedBy: string | undefined } {
  const steps = [...chunks.map((chunk) => matcher.push(chunk)), matcher.end()];
  return {
    text: steps.map((step) => step.text).join(''),
    steps,
    labels: steps.flatMap((step) => step.matches.map((match) => match.rule.label)),
    refusedBy: steps.find((step) => step.refusedBy)?.refusedBy?.label,
  };
}

describe('StreamingMatcher', () => {
  test('a keyword split across two chunks is found as in the whole text', () => {
    const rules = rulesOf(keyword('codename', 'bluebird', 'redact'));
    const split = run(new StreamingMatcher(rules), ['the blue', 'bird sings']);
    assert.equal(split.text, 'the [redacted] sings');
    assert.deepEqual(split.labels, ['codename']);
    assert.equal(run(new StreamingMatcher(rules), ['the bluebird sings']).text, split.text);
  });

  test('the hold-back is the longest window minus one: a whole-word keyword needs one character after it', () => {
    assert.equal(new StreamingMatcher(rulesOf(keyword('a', 'secret', 'flag', { wholeWord: false }))).holdBack, 'secret'.length - 1);
    assert.equal(new StreamingMatcher(rulesOf(keyword('a', 'secret', 'flag'))).holdBack, 'secret'.length);
    assert.equal(new StreamingMatcher(rulesOf(regex('r', 'x[0-9]+', 'flag'))).holdBack, 63, 'maxLength 64 by default');
    assert.equal(new StreamingMatcher(rulesOf(regex('r', 'x[0-9]+', 'flag', { maxLength: 10 }), keyword('k', 'abc', 'flag'))).holdBack, 9, 'the longest rule sets it');
    assert.equal(new StreamingMatcher([]).holdBack, 0);
  });

  test('only the hold-back is kept: the rest of each chunk is let out at once', () => {
    const matcher = new StreamingMatcher(rulesOf(keyword('a', 'secret', 'flag', { wholeWord: false })));
    assert.equal(matcher.push('hello world').text, 'hello ');
    assert.equal(matcher.held, 5);
    assert.equal(matcher.push('!').text, 'w');
    assert.equal(matcher.held, 5);
    assert.equal(matcher.push('abc').text, 'orl', 'a short chunk lets out as much as it adds');
    assert.equal(matcher.end().text, 'd!abc', 'the end flushes the held-back text');
    assert.equal(matcher.held, 0);
  });

  test('with no rules nothing is held back', () => {
    const matcher = new StreamingMatcher([]);
    assert.equal(matcher.push('a').text, 'a');
    assert.equal(matcher.held, 0);
  });

  test('redaction across chunks, several matches, a custom replacement', () => {
    const rules = rulesOf(keyword('pw', 'hunter2', 'redact', { replacement: '***' }), regex('id', 'id-[0-9]{3}', 'redact', { maxLength: 6 }));
    const result = run(new StreamingMatcher(rules), ['my pass is hun', 'ter2, id', '-12', '3 and id-4', '56 end']);
    assert.equal(result.text, 'my pass is ***, [redacted] and [redacted] end');
    assert.deepEqual(result.labels, ['pw', 'id', 'id']);
  });

  test('flag lets the text through and reports the match', () => {
    const result = run(new StreamingMatcher(rulesOf(keyword('weather', 'rain', 'flag'))), ['more ra', 'in today']);
    assert.equal(result.text, 'more rain today');
    assert.deepEqual(result.steps.flatMap((step) => step.matches.map((match) => match.text)), ['rain']);
  });

  test('refuse: the text before the match is let out; the match and everything after it never are', () => {
    const matcher = new StreamingMatcher(rulesOf(keyword('codename', 'bluebird', 'refuse')));
    const result = run(matcher, ['It is called blue', 'bird and more', ' text']);
    assert.equal(result.text, 'It is called ');
    assert.equal(result.refusedBy, 'codename');
    assert.equal(matcher.push('anything').text, '', 'after a refusal nothing comes out');
    assert.equal(matcher.refusedBy?.label, 'codename');
  });

  test('the first match in the text wins, whichever rule it is', () => {
    const rules = rulesOf(keyword('late', 'zebra', 'refuse'), keyword('early', 'apple', 'redact'));
    const result = run(new StreamingMatcher(rules), ['an apple and a zebra']);
    assert.equal(result.text, 'an [redacted] and a ');
    assert.deepEqual(result.labels, ['early', 'late']);
  });

  test('keywords match whole words by default, case-insensitively; wholeWord false matches inside words', () => {
    const whole = rulesOf(keyword('cat', 'cat', 'redact'));
    assert.equal(run(new StreamingMatcher(whole), ['Cat, cats, conCAT', 'enate, CAT']).text, '[redacted], cats, conCATenate, [redacted]');
    assert.equal(run(new StreamingMatcher(whole), ['the ca', 't']).text, 'the [redacted]', 'the end of the text is a word boundary');
    assert.equal(run(new StreamingMatcher(whole), ['café cat_x 1cat cat']).text, 'café cat_x 1cat [redacted]', 'digits and _ are word characters');
    const unicode = rulesOf(keyword('cafe', 'café', 'redact'));
    assert.equal(run(new StreamingMatcher(unicode), ['un CAFÉ, des cafés']).text, 'un [redacted], des cafés', 'Unicode letters count as word characters');
    const inside = rulesOf(keyword('cat', 'cat', 'redact', { wholeWord: false }));
    assert.equal(run(new StreamingMatcher(inside), ['concatenate']).text, 'con[redacted]enate');
    const exact = rulesOf(keyword('cat', 'Cat', 'redact', { caseSensitive: true }));
    assert.equal(run(new StreamingMatcher(exact), ['cat Cat']).text, 'cat [redacted]');
  });

  test('a regex with \\b sees the character before the held-back text', () => {
    const rules = rulesOf(regex('word', '\\bing\\b', 'redact', { maxLength: 3 }));
    assert.equal(run(new StreamingMatcher(rules), ['sing', 'ing ing', ' ring']).text, 'singing [redacted] ring');
  });

  test('the output is the same however the text is cut into chunks', () => {
    const rules = rulesOf(
      keyword('codename', 'bluebird', 'redact'),
      keyword('stop', 'halt now', 'refuse'),
      regex('number', '[0-9]{3}-[0-9]{4}', 'redact', { maxLength: 8, replacement: '#' }),
      keyword('flagged', 'rain', 'flag', { wholeWord: false }),
      regex('at the start', '^blue', 'flag', { maxLength: 4 }),
      regex('at the end', 'x,?$', 'redact', { maxLength: 2, replacement: '<end>' }),
    );
    const alphabet = ['blue', 'bird', ' ', 'halt', ' now', 'rain', '555', '-', '1234', 'x', 'é', '😀', ','];
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...alphabet), { maxLength: 24 }), fc.array(fc.nat({ max: 40 }), { maxLength: 8 }), (words, cuts) => {
        const text = words.join('');
        const whole = run(new StreamingMatcher(rules), [text]);
        const points = [...new Set(cuts.map((cut) => Math.min(cut, text.length)))].sort((a, b) => a - b);
        const chunks = [0, ...points].map((from, index) => text.slice(from, points[index] ?? text.length));
        const split = run(new StreamingMatcher(rules), chunks);
        assert.equal(split.text, whole.text);
        assert.deepEqual(split.labels, whole.labels);
        assert.equal(split.refusedBy, whole.refusedBy);
      }),
      { numRuns: 300, seed: 16 },
    );
  });

  test('a surrogate pair is never cut in two between the text let out and the text held back', () => {
    const matcher = new StreamingMatcher(rulesOf(keyword('x', 'abc', 'flag', { wholeWord: false })));
    const pieces = [matcher.push('a😀'), matcher.push('bc'), matcher.push('d😀😀e'), matcher.end()].map((step) => step.text);
    // A lone surrogate would not survive UTF-8 encoding on the wire.
    for (const piece of pieces) assert.equal(Buffer.from(piece, 'utf8').toString('utf8'), piece, JSON.stringify(piece));
    assert.equal(pieces.join(''), 'a😀bcd😀😀e');
  });

  test('a long text with a match every few characters is handled in one pass per rule, not one per match', () => {
    // A /v1 caller may bring a megabyte of history: rescanning it after each of its matches would
    // cost matches × length (here 90,000 × 330,000 characters), which would not finish in a test.
    const rules = rulesOf(keyword('the', 'the', 'redact', { replacement: 'T' }), keyword('cat', 'cat', 'flag'), regex('digits', '[0-9]+', 'redact', { replacement: '#' }), keyword('never', 'zebra', 'refuse'));
    const text = 'the cat 42 '.repeat(30_000);
    const result = run(new StreamingMatcher(rules), [text]);
    assert.equal(result.labels.length, 90_000);
    assert.ok(result.text === 'T cat # '.repeat(30_000), 'every match handled');
  });

  test('a classic catastrophic-backtracking pattern runs in linear time: it completes and gives the right answer', () => {
    // In a backtracking engine, (a+)+$ against many a's and a final b takes exponential time.
    const rules = rulesOf(regex('redos', '(a+)+$', 'redact', { maxLength: 1024 }), regex('redos2', '(x+x+)+y', 'flag', { maxLength: 1024 }));
    const text = `${'a'.repeat(30_000)}b ${'x'.repeat(5000)}`;
    const result = run(new StreamingMatcher(rules), [text.slice(0, 10_000), text.slice(10_000)]);
    assert.deepEqual(result.labels, [], 'no match: the run of a is followed by b, and no y follows the run of x');
    assert.ok(result.text === text, 'the text passes unchanged');
    const matching = run(new StreamingMatcher(rules), [`${'a'.repeat(20)}b `, 'a'.repeat(900)]);
    assert.deepEqual(matching.labels, ['redos'], 'a run of a at the very end does match');
    assert.ok(matching.text === `${'a'.repeat(20)}b [redacted]`, 'and is redacted');
  });
});
