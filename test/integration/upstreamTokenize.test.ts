import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FakeUpstream } from '../helpers/FakeUpstream.js';
import { startTestServer, type TestServer } from '../helpers/startTestServer.js';

/**
 * Prompt fitting for upstream engines uses the upstream's own token counts where it has a
 * /tokenize (llama-server's `{content}` or vLLM's `{model, prompt}`), and the chars/3 estimate
 * where it has none. The fake upstream counts one token per character, three times the estimate,
 * so a message the estimate lets through is refused once the real count is known.
 */
const CONTEXT = 2048;
/** About 1,000 tokens by the estimate (fits in 2,048), 3,000 by the upstream's count (does not). */
const LONG = 'word '.repeat(600);

describe('upstream engines: prompt fitting with /tokenize', () => {
  let pulledDir: string;
  before(async () => {
    pulledDir = await mkdtemp(join(tmpdir(), 'parley-no-models-'));
  });
  after(async () => {
    await rm(pulledDir, { recursive: true, force: true });
  });

  async function gatewayFor(tokenizer: FakeUpstream['tokenizer']): Promise<{ upstream: FakeUpstream; gateway: TestServer }> {
    const upstream = await FakeUpstream.start();
    upstream.tokenizer = tokenizer;
    const gateway = await startTestServer('ws', undefined, { pulledModelsDir: pulledDir, upstreams: [`fake=${upstream.url}`], upstreamHealthIntervalMs: 0, maxTextChars: 8000 });
    return { upstream, gateway };
  }

  for (const tokenizer of ['llama', 'vllm'] as const) {
    test(`${tokenizer === 'llama' ? "llama-server's" : "vLLM's"} /tokenize counts decide: a message over the context is refused before it is sent`, async () => {
      const { upstream, gateway } = await gatewayFor(tokenizer);
      try {
        assert.equal(upstream.contextLength, CONTEXT);
        const client = await gateway.client();
        const id = client.send(LONG);
        const terminal = await client.terminal(id);
        assert.equal(terminal.type, 'error');
        assert.equal((terminal as { code: string }).code, 'context_overflow');
        assert.match((terminal as { message: string }).message, /about 30\d\d tokens/, 'the upstream count, not the estimate');
        assert.equal(upstream.completions.length, 0, 'nothing reached the upstream');
        // A message whose bytes alone fit is not counted (a token is at least a byte): no round trip.
        const asked = upstream.tokenizeRequests.length;
        const short = client.send('Hello there.');
        assert.equal((await client.terminal(short)).type, 'done');
        assert.equal(upstream.completions.length, 1);
        assert.equal(upstream.tokenizeRequests.length, asked, 'no /tokenize for a short prompt');
      } finally {
        await gateway.stop();
        await upstream.close();
      }
    });
  }

  test('an upstream without /tokenize is asked once, then the estimate fits the prompt', async () => {
    const { upstream, gateway } = await gatewayFor('none');
    try {
      const client = await gateway.client();
      const first = client.send(LONG);
      assert.equal((await client.terminal(first)).type, 'done', 'about 1,000 estimated tokens fit');
      const asked = upstream.tokenizeRequests.length;
      assert.equal(asked, 2, "both dialects tried once (llama-server's, then vLLM's)");
      const second = client.send(`${LONG} again`);
      assert.equal((await client.terminal(second)).type, 'done');
      assert.equal(upstream.tokenizeRequests.length, asked, 'not asked again');
    } finally {
      await gateway.stop();
      await upstream.close();
    }
  });
});
