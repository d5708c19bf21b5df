import type * as z from 'zod/mini';
import { ApiKeyListResponse, CreateApiKeyResponse, type ApiKeyInfo, type CreateApiKeyRequest } from '../../../shared/protocol.js';
import { RefreshResult, type TokenBroker } from '../auth/TokenBroker.js';
import { ApiError } from './ApiError.js';

const BASE = '/api/keys';

/**
 * The user's API keys (docs/protocol.md, "API keys"), with the broker's access token as a Bearer
 * token; a 401 gets one refresh and one retry, as in ConversationApi. A created key is handed to
 * the caller and kept nowhere here: no storage, no cache.
 */
export class ApiKeysApi {
  constructor(private readonly broker: TokenBroker) {}

  /** My live keys, newest first. */
  async list(): Promise<readonly ApiKeyInfo[]> {
    return (await this.json(await this.request(BASE), ApiKeyListResponse)).items;
  }

  /** A new key; the answer is the only place its value ever appears. */
  async create(name: string): Promise<CreateApiKeyResponse> {
    const body: CreateApiKeyRequest = { name };
    return this.json(await this.request(BASE, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }), CreateApiKeyResponse);
  }

  async revoke(prefix: string): Promise<void> {
    await this.request(`${BASE}/${encodeURIComponent(prefix)}`, { method: 'DELETE' });
  }

  private async request(path: string, init: RequestInit = {}): Promise<Response> {
    if (!this.broker.token) await this.broker.refresh();
    let response = await this.send(path, init);
    if (response.status === 401 && this.broker.refreshSupported) {
      const refreshed = await this.broker.refresh();
      if (refreshed === RefreshResult.ok) response = await this.send(path, init);
    }
    if (!response.ok) {
      const error = await ApiError.from(response);
      // ApiError words a 404 for conversations.
      if (error.notFound) throw new ApiError('That key is not there any more.', 404, error.code);
      throw error;
    }
    return response;
  }

  private async send(path: string, init: RequestInit): Promise<Response> {
    const token = this.broker.token?.token;
    try {
      return await fetch(path, {
        ...init,
        credentials: 'same-origin',
        cache: 'no-store',
        headers: { ...(init.headers as Record<string, string> | undefined), ...(token ? { authorization: `Bearer ${token}` } : {}) },
      });
    } catch {
      throw ApiError.unreachable();
    }
  }

  private async json<T>(response: Response, schema: z.ZodMiniType<T>): Promise<T> {
    let payload: unknown;
    try {
      payload = await response.json();
    } catch {
      payload = undefined;
    }
    const parsed = schema.safeParse(payload);
    if (!parsed.success) throw new ApiError('The server sent an unexpected answer.', response.status, 'bad_response');
    return parsed.data;
  }
}
