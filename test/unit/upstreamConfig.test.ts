import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, loadConfig, upstreamSpecs } from '../../server/config.js';
import { UpstreamEngine } from '../../server/engine/UpstreamEngine.js';
import { ContextOverflowError } from '../../server/ParleyError.js';

test('without --upstream or --role, nothing changes: no upstreams, role all', () => {
  const config = loadConfig({});
  assert.deepEqual(config.upstreams, []);
  assert.equal(config.role, 'all');
  assert.deepEqual(upstreamSpecs(config), []);
});

test('--upstream entries group by name into pools, in the order given, each with its --upstream-key', () => {
  const config = loadConfig({ upstreams: ['a=http://one:8080', 'b=https://two/', 'a=http://three:8080'], upstreamKeys: ['a=sk-secret'] });
  assert.deepEqual(upstreamSpecs(config), [
    { name: 'a', urls: ['http://one:8080', 'http://three:8080'], key: 'sk-secret' },
    { name: 'b', urls: ['https://two/'] },
  ]);
});

test('a malformed --upstream, or a key naming no upstream, is a ConfigError that never shows the key', () => {
  assert.throws(() => loadConfig({ upstreams: ['no-url'] }), ConfigError);
  assert.throws(() => loadConfig({ upstreams: ['a=ftp://x'] }), ConfigError);
  assert.throws(() => loadConfig({ role: 'gateway' }), ConfigError);
  assert.throws(
    () => loadConfig({ upstreams: ['a=http://x'], upstreamKeys: ['b=sk-do-not-print'] }),
    (error: unknown) => error instanceof ConfigError && error.message.includes("'b'") && !error.message.includes('sk-do-not-print'),
  );
  assert.throws(() => loadConfig({ upstreams: ['a=http://x'], upstreamKeys: ['sk-no-name'] }), (error: unknown) => error instanceof ConfigError && !error.message.includes('sk-no-name'));
});

test('an upstream that tells no context length gets --upstream-context-size; prompts are fitted by the chars/3 estimate', async () => {
  // Port 9 on loopback: nothing listens, so the probe is refused at once and the upstream stays out of rotation.
  const engine = await UpstreamEngine.open({ name: 'far', urls: ['http://127.0.0.1:9'], maxInFlight: 2, healthIntervalMs: 0, contextSize: 300 });
  try {
    assert.equal(engine.info.contextSize, 300);
    assert.equal(engine.slots, 2);
    assert.deepEqual(engine.upstreams().map((upstream) => upstream.healthy), [false]);
    const turn = 'x'.repeat(150); // about 50 tokens + 4 for the turn
    const history = [{ role: 'user' as const, text: turn }, { role: 'assistant' as const, text: turn }, { role: 'user' as const, text: turn }, { role: 'assistant' as const, text: turn }];
    const plan = engine.planPrompt(history, 'hello', 64);
    assert.equal(plan.turnTokens[0], 54);
    assert.equal(plan.firstTurn, 2, 'the oldest exchange is left out to fit the reply');
    assert.ok(plan.promptTokens + plan.maxTokens <= 300);
    assert.throws(() => engine.planPrompt([], 'y'.repeat(900), 64), ContextOverflowError);
  } finally {
    await engine.dispose();
  }
});
