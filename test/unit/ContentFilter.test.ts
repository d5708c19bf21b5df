import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ContentFilter } from '../../server/filter/ContentFilter.js';
import { parseFilterRules } from '../../server/filter/loadFilterRules.js';
import { createLogger } from '../../server/logging/createLogger.js';
import { Metrics } from '../../server/metrics/Metrics.js';
import { LogSink } from '../helpers/LogSink.js';

const RULES = parseFilterRules(
  [
    '{"label": "banned", "match": {"keyword": "zebra"}, "applies": "input", "action": "refuse"}',
    '{"label": "pin", "match": {"regex": "pin [0-9]{4}"}, "applies": "both", "action": "redact", "maxLength": 8}',
    '{"label": "greeting", "match": {"keyword": "hello"}, "applies": "input", "action": "flag"}',
  ].join('\n'),
  'rules.jsonl',
);

function setup(logContent = false) {
  const sink = new LogSink();
  const log = createLogger({ level: 'debug', destination: sink });
  const metrics = new Metrics();
  return { sink, log, metrics, filter: new ContentFilter(RULES, { logContent, metrics }) };
}

const auditOf = (sink: LogSink) => sink.records.filter((record) => record.event === 'content_filter');

describe('ContentFilter', () => {
  test('screen redacts the message, a caller\'s earlier turns and system prompt; untouched turns stay as they were', () => {
    const { filter, log } = setup();
    const untouched = { role: 'assistant' as const, text: 'Sure.' };
    const result = filter.screen({ text: 'my pin 1234', history: [{ role: 'user', text: 'old pin 0000' }, untouched], options: { system: 'pin 9999 is the code', temperature: 0 } }, log, 'r1');
    assert.ok(result.ok);
    assert.equal(result.request.text, 'my [redacted]');
    assert.deepEqual(result.request.history?.[0], { role: 'user', text: 'old [redacted]' });
    assert.equal(result.request.history?.[1], untouched);
    assert.deepEqual(result.request.options, { system: '[redacted] is the code', temperature: 0 });
  });

  test('screen refuses when any text matches a refuse rule, naming its label', () => {
    const { filter, log } = setup();
    const result = filter.screen({ text: 'fine', history: [{ role: 'user', text: 'a Zebra!' }] }, log, 'r2');
    assert.ok(!result.ok);
    assert.equal(result.error.code, 'content_filtered');
    assert.equal(result.error.httpStatus, 400);
    assert.equal(result.error.message, 'Your message was refused by the content filter (rule "banned").');
  });

  test('one audit event per rule and request, with a count, and no text; the metric counts every match', async () => {
    const { filter, log, sink, metrics } = setup();
    const history = Array.from({ length: 500 }, (_, index) => ({ role: 'user' as const, text: `hello, pin ${String(1000 + index)} hello` }));
    assert.ok(filter.screen({ text: 'hello', history }, log, 'r3').ok);
    const events = auditOf(sink);
    assert.deepEqual(
      events.map(({ rule, action, direction, req, count }) => ({ rule, action, direction, req, count })),
      [
        { rule: 'greeting', action: 'flag', direction: 'input', req: 'r3', count: 1001 },
        { rule: 'pin', action: 'redact', direction: 'input', req: 'r3', count: 500 },
      ],
    );
    assert.ok(sink.lines.every((line) => !line.includes('pin 1') && !line.includes('hello,')), 'no matched or surrounding text in the log');
    assert.match(await metrics.render(), /parley_content_filter_matches_total\{rule="greeting",action="flag",direction="input"\} 1001/);
  });

  test('with content logging the event carries the matched texts, at most 20', () => {
    const { filter, log, sink } = setup(true);
    const history = Array.from({ length: 30 }, (_, index) => ({ role: 'user' as const, text: `pin ${String(1000 + index)}` }));
    filter.screen({ text: 'x', history }, log, 'r4');
    const [event] = auditOf(sink);
    assert.equal(event?.count, 30);
    assert.deepEqual(event?.content, Array.from({ length: 20 }, (_, index) => `pin ${String(1000 + index)}`));
  });

  test('output: no filter without output rules; a refusal at the end of the reply is found when it ends', () => {
    const { log } = setup();
    const inputOnly = new ContentFilter(RULES.filter((rule) => !rule.output), { logContent: false });
    assert.equal(inputOnly.output(log, 'r5'), undefined);
    const refusing = new ContentFilter(parseFilterRules('{"label": "stop", "match": {"keyword": "end"}, "applies": "output", "action": "refuse"}', 'r.jsonl'), { logContent: false });
    const output = refusing.output(log, 'r6');
    assert.ok(output);
    const shown = [output.push('the '), output.push('very '), output.push('end')];
    assert.equal(shown.join(''), 'the very ', 'everything but the last 3 characters (the hold-back: "end" plus the character after it, minus one)');
    assert.equal(output.refused, undefined, 'not decided yet: "end" might be the start of "endless"');
    assert.equal(output.end(), '');
    // Read again: the assertion above narrowed the field for the compiler, not for the code.
    const refused = (output as { refused?: Error }).refused;
    assert.equal(refused?.message, 'The reply was stopped by the content filter (rule "stop").');
  });
});
