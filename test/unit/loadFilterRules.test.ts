import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ConfigError } from '../../server/config.js';
import { DEFAULT_REGEX_MAX_LENGTH, DEFAULT_REPLACEMENT } from '../../server/filter/FilterRule.js';
import { FilterRulesError, loadFilterRules, parseFilterRules } from '../../server/filter/loadFilterRules.js';

const FILE = 'rules.jsonl';

/** Parsing `lines` fails with a FilterRulesError naming the file, `line` and what `reason` matches. */
function assertBadLine(lines: readonly string[], line: number, reason: RegExp): void {
  assert.throws(
    () => parseFilterRules(lines.join('\n'), FILE),
    (error: unknown) => {
      assert.ok(error instanceof FilterRulesError, `expected FilterRulesError, got ${String(error)}`);
      assert.ok(error instanceof ConfigError, 'a bad rules file is a bad configuration (exit 2)');
      assert.match(error.message, new RegExp(`^--filter-rules ${FILE} line ${line}: `));
      assert.match(error.message, reason);
      assert.ok(!error.message.includes('\n'), 'the message is one line');
      return true;
    },
  );
}

const good = '{"label": "ok", "match": {"keyword": "fine"}, "applies": "both", "action": "flag"}';

describe('the content filter rules file', () => {
  test('a good file: comments and blank lines skipped, defaults filled in, lines remembered', () => {
    const rules = parseFilterRules(
      [
        '# Parley content filter',
        '',
        '{"label": "codename", "match": {"keyword": "Bluebird"}, "applies": "both", "action": "refuse"}',
        '   # an indented comment',
        '{"label": "card number", "match": {"regex": "\\\\b(?:\\\\d[ -]?){13,16}\\\\b"}, "applies": "output", "action": "redact", "maxLength": 40, "replacement": "[card]"}',
        '{"label": "Secret", "match": {"keyword": "Secret"}, "applies": "input", "action": "flag", "caseSensitive": true, "wholeWord": false}',
        '{"label": "ids", "match": {"regex": "id-[0-9]+"}, "applies": "output", "action": "redact"}',
      ].join('\r\n'),
      FILE,
    );
    assert.equal(rules.length, 4);
    const [codename, card, secret, ids] = rules;
    assert.deepEqual(
      { label: codename?.label, line: codename?.line, kind: codename?.kind, input: codename?.input, output: codename?.output, action: codename?.action, maxLength: codename?.maxLength, wholeWord: codename?.wholeWord },
      { label: 'codename', line: 3, kind: 'keyword', input: true, output: true, action: 'refuse', maxLength: 'Bluebird'.length, wholeWord: true },
    );
    assert.ok(codename?.pattern.test('a BLUEBIRD flies'), 'case-insensitive by default');
    assert.deepEqual([card?.line, card?.kind, card?.input, card?.output, card?.maxLength, card?.replacement], [5, 'regex', false, true, 40, '[card]']);
    assert.deepEqual([secret?.input, secret?.output, secret?.wholeWord], [true, false, false]);
    assert.equal(secret?.pattern.test('secret'), false, 'caseSensitive: true');
    assert.equal(ids?.maxLength, DEFAULT_REGEX_MAX_LENGTH);
    assert.equal(ids?.replacement, DEFAULT_REPLACEMENT);
    assert.equal(ids?.wholeWord, false, 'regexes say \\b themselves');
  });

  test('a keyword is a literal, not a pattern', () => {
    const [rule] = parseFilterRules('{"label": "dots", "match": {"keyword": "a.b"}, "applies": "both", "action": "flag"}', FILE);
    assert.equal(rule?.pattern.test('a.b'), true);
    assert.equal(rule?.pattern.test('axb'), false);
  });

  test('an empty file or only comments: no rules', () => {
    assert.deepEqual(parseFilterRules('', FILE), []);
    assert.deepEqual(parseFilterRules('# nothing yet\n\n', FILE), []);
  });

  test('a line that is not JSON names its line', () => {
    assertBadLine([good, '{"label": "x",'], 2, /not a JSON object/);
  });

  test('a missing or wrong field names the field', () => {
    assertBadLine([good, '{"match": {"keyword": "x"}, "applies": "both", "action": "flag"}'], 2, /label/);
    assertBadLine(['{"label": "x", "match": {"keyword": "x"}, "applies": "sideways", "action": "flag"}'], 1, /applies/);
    assertBadLine(['{"label": "x", "match": {"keyword": "x"}, "applies": "both", "action": "delete"}'], 1, /action/);
    assertBadLine(['{"label": "x", "match": {"word": "x"}, "applies": "both", "action": "flag"}'], 1, /match/);
    assertBadLine(['{"label": "x", "match": {"keyword": ""}, "applies": "both", "action": "flag"}'], 1, /match/);
    assertBadLine(['{"label": "x", "match": {"keyword": "x"}, "applies": "both", "action": "flag", "caseSensitive": "yes"}'], 1, /caseSensitive/);
    assertBadLine(['{"label": "x", "match": {"regex": "x"}, "applies": "both", "action": "flag", "maxLength": 0}'], 1, /maxLength/);
    assertBadLine(['["not", "an", "object"]'], 1, /rule|expected/i);
  });

  test('an unknown key is refused, so a typo never goes unnoticed', () => {
    assertBadLine(['{"label": "x", "match": {"keyword": "x"}, "applies": "both", "action": "flag", "casesensitive": true}'], 1, /casesensitive/);
  });

  test('options that belong to another kind of rule are refused', () => {
    assertBadLine(['{"label": "x", "match": {"keyword": "x"}, "applies": "both", "action": "flag", "maxLength": 5}'], 1, /maxLength is for regex rules/);
    assertBadLine(['{"label": "x", "match": {"regex": "x"}, "applies": "both", "action": "flag", "wholeWord": true}'], 1, /wholeWord is for keyword rules/);
    assertBadLine(['{"label": "x", "match": {"regex": "x"}, "applies": "both", "action": "flag", "replacement": "[x]"}'], 1, /replacement is for redact rules/);
  });

  test('a label used twice names both lines', () => {
    assertBadLine([good, '# again', good], 3, /"ok" is already used on line 1/);
  });

  test('a regex RE2 cannot compile is refused: lookaround and backreferences named as such', () => {
    assertBadLine(['{"label": "x", "match": {"regex": "foo(?=bar)"}, "applies": "both", "action": "flag"}'], 1, /match\.regex: .*lookaround is not supported/);
    assertBadLine(['{"label": "x", "match": {"regex": "(?<!no)way"}, "applies": "both", "action": "flag"}'], 1, /match\.regex: .*lookaround is not supported/);
    assertBadLine(['{"label": "x", "match": {"regex": "(a)\\\\1"}, "applies": "both", "action": "flag"}'], 1, /match\.regex: .*backreferences are not supported/);
    assertBadLine(['{"label": "x", "match": {"regex": "[a-"}, "applies": "both", "action": "flag"}'], 1, /match\.regex: missing closing \]/);
  });

  test('a regex that matches the empty string is refused (it would match everywhere)', () => {
    assertBadLine(['{"label": "x", "match": {"regex": "a*"}, "applies": "both", "action": "flag"}'], 1, /matches the empty string/);
  });

  test('a label with characters outside letters, digits, spaces and _ . : / - is refused', () => {
    assertBadLine(['{"label": "bad label!", "match": {"keyword": "x"}, "applies": "both", "action": "flag"}'], 1, /label: may hold/);
  });

  test('loadFilterRules reads the file and names it; a missing file names it too', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'parley-rules-'));
    try {
      const path = join(dir, 'rules.jsonl');
      await writeFile(path, `${good}\n`);
      assert.equal((await loadFilterRules(path)).length, 1);
      await writeFile(path, `${good}\n{"label": "y"}\n`);
      await assert.rejects(loadFilterRules(path), (error: unknown) => error instanceof FilterRulesError && error.message.startsWith(`--filter-rules ${path} line 2: `));
      await assert.rejects(loadFilterRules(join(dir, 'missing.jsonl')), (error: unknown) => error instanceof FilterRulesError && /missing\.jsonl: cannot read the file \(ENOENT\)/.test(error.message));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
