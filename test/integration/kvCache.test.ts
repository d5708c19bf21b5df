import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { GenerateResult, Turn } from '../../server/engine/Engine.js';
import { ensureModel } from '../../models/ensureModel.js';
import { LlamaEngine } from '../../server/engine/LlamaEngine.js';

/**
 * The KV cache and privacy: one slot, so every conversation runs on the same sequence. A
 * conversation's follow-up reuses its own cached turns; another conversation, even with the very
 * same words, reuses nothing (the sequence is cleared first), so no prefix of one person's prompt
 * is ever served from another's cache (which would also show in its speed).
 */
describe('the KV cache serves one conversation only', () => {
  let engine: LlamaEngine;
  before(async () => {
    engine = await LlamaEngine.load({ modelPath: (await ensureModel('tiny')).path, demo: false, threads: 1, slots: 1, contextSize: 512, temperature: 0 });
  });
  after(async () => {
    await engine.dispose();
  });

  const generate = (conversationId: string, history: readonly Turn[], text: string): Promise<GenerateResult> =>
    engine.generate({ slot: 0, conversationId, history, text, maxTokens: 8, signal: new AbortController().signal, onText: () => undefined });

  test("a follow-up reuses its conversation's cache; another conversation with the same words starts from nothing", async () => {
    const words = 'PARLEY-CANARY-7731 remember this';
    const first = await generate('c_alice', [], words);
    assert.equal(first.cachedPromptTokens, 0, 'a new conversation on a fresh sequence');
    const followUp = await generate('c_alice', [{ role: 'user', text: words }, { role: 'assistant', text: first.text }], 'and then?');
    assert.ok((followUp.cachedPromptTokens ?? 0) >= first.promptTokens - 1, `the earlier turns come from the cache: ${followUp.cachedPromptTokens} of ${followUp.promptTokens}`);
    const other = await generate('c_bob', [], words);
    assert.equal(other.promptTokens, first.promptTokens);
    assert.equal(other.cachedPromptTokens, 0, "nothing of Alice's conversation is reused for Bob's");
  });
});
