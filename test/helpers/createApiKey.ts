import type { TestServer } from './startTestServer.js';

/** A new invite user `name` on `server`, and an API key of theirs made the way the page makes one (POST /api/keys). */
export async function createApiKey(server: TestServer, name: string): Promise<string> {
  const token = await server.token(name);
  const response = await fetch(`${server.baseUrl}/api/keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: `${name}'s key` }),
  });
  if (response.status !== 201) throw new Error(`key creation failed: ${response.status} ${await response.text()}`);
  return ((await response.json()) as { key: string }).key;
}
