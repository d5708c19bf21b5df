import { BenchClient } from '../../bench/BenchClient.js';
import { streamChatCompletion } from '../../bench/streamChatCompletion.js';

const TIMEOUT_MS = 60_000;

/**
 * Chats through every gateway the way people and tools do, and says what each step got:
 * - the web page;
 * - an access token from the invite (POST /api/token), then a reply over the chat socket;
 * - the same token on the next gateway (they share the signing key), and a reply there;
 * - an API key (POST /api/keys), then a streamed /v1/chat/completions reply.
 * Resolves with the number of failed steps.
 */
export async function smokeCheck(gateways: readonly string[], invite: string, write: (line: string) => void): Promise<number> {
  let failed = 0;
  const step = async (what: string, work: () => Promise<string>) => {
    try {
      write(`ok   ${what}: ${await work()}`);
    } catch (error) {
      failed++;
      write(`FAIL ${what}: ${error instanceof Error ? error.message : String(error)}`);
    }
  };
  for (const [index, origin] of gateways.entries()) {
    const next = gateways[(index + 1) % gateways.length] as string;
    await step(`gateway ${index + 1}: the page`, async () => {
      const response = await fetch(`${origin}/`, { signal: AbortSignal.timeout(TIMEOUT_MS) });
      const type = response.headers.get('content-type') ?? '';
      if (response.status !== 200 || !type.startsWith('text/html')) throw new Error(`GET / answered ${response.status} ${type}`);
      return 'served';
    });
    let token: string | undefined;
    await step(`gateway ${index + 1}: sign in with the invite`, async () => {
      token = await signIn(origin, invite, `smoke-${index + 1}`);
      return 'access token';
    });
    if (token === undefined) continue;
    const signedIn = token;
    await step(`gateway ${index + 1}: chat socket reply`, () => chat(origin, signedIn));
    if (next !== origin) await step(`gateway ${(index + 1) % gateways.length + 1}: reply with gateway ${index + 1}'s token`, () => chat(next, signedIn));
    await step(`gateway ${index + 1}: /v1/chat/completions with an API key`, async () => {
      const key = await apiKey(origin, signedIn);
      const models = await fetch(`${origin}/v1/models`, { headers: { authorization: `Bearer ${key}` }, signal: AbortSignal.timeout(TIMEOUT_MS) });
      const model = ((await models.json()) as { data?: Array<{ id: string }> }).data?.[0]?.id;
      if (model === undefined) throw new Error(`GET /v1/models answered ${models.status} with no model`);
      const trace = await streamChatCompletion(origin, { text: 'Hello from the smoke check', maxTokens: 32, temperature: 0, apiKey: key, model, signal: AbortSignal.timeout(TIMEOUT_MS) });
      if (trace.tokens === 0) throw new Error('an empty reply');
      return `${trace.tokens} tokens streamed from ${model}`;
    });
  }
  return failed;
}

async function signIn(origin: string, invite: string, name: string): Promise<string> {
  const response = await fetch(`${origin}/api/token`, { method: 'POST', headers: { 'content-type': 'application/json', origin }, body: JSON.stringify({ invite, name }), signal: AbortSignal.timeout(TIMEOUT_MS) });
  if (response.status !== 200) throw new Error(`POST /api/token answered ${response.status}`);
  return ((await response.json()) as { token: string }).token;
}

async function chat(origin: string, token: string): Promise<string> {
  const client = await BenchClient.connect(`${origin.replace(/^http/, 'ws')}/ws`, origin, token);
  try {
    const trace = await Promise.race([client.send('Hello from the smoke check').ended, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no reply in time')), TIMEOUT_MS).unref())]);
    if (trace.terminal !== 'done') throw new Error(`the reply ended in ${trace.terminal ?? 'nothing'} ${trace.errorCode ?? ''}`);
    return `${trace.completionTokens} tokens`;
  } finally {
    client.close();
  }
}

async function apiKey(origin: string, token: string): Promise<string> {
  const response = await fetch(`${origin}/api/keys`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', origin }, body: JSON.stringify({ name: 'smoke check' }), signal: AbortSignal.timeout(TIMEOUT_MS) });
  if (response.status !== 201) throw new Error(`POST /api/keys answered ${response.status}`);
  return ((await response.json()) as { key: string }).key;
}
