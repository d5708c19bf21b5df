import { ApiKeyListResponse, CreateApiKeyResponse, type ApiKeyInfo, type CreateApiKeyRequest } from '../../../shared/protocol.js';
import type { TokenBroker } from '../auth/TokenBroker.js';
import { ApiError } from './ApiError.js';
import { AuthorizedHttp } from './AuthorizedHttp.js';

const BASE = '/api/keys';

/**
 * The user's API keys (docs/protocol.md, "API keys"), with the broker's access token as a Bearer
 * token through AuthorizedHttp (one refresh on a 401). A created key is handed to
 * the caller and kept nowhere here: no storage, no cache.
 */
export class ApiKeysApi {
  private readonly http: AuthorizedHttp;

  constructor(broker: TokenBroker) {
    this.http = new AuthorizedHttp(broker);
  }

  /** My live keys, newest first. */
  async list(): Promise<readonly ApiKeyInfo[]> {
    return (await this.http.json(await this.request(BASE), ApiKeyListResponse)).items;
  }

  /** A new key; the answer is the only place its value ever appears. */
  async create(name: string): Promise<CreateApiKeyResponse> {
    const body: CreateApiKeyRequest = { name };
    return this.http.json(await this.request(BASE, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }), CreateApiKeyResponse);
  }

  async revoke(prefix: string): Promise<void> {
    await this.request(`${BASE}/${encodeURIComponent(prefix)}`, { method: 'DELETE' });
  }

  private async request(path: string, init: RequestInit = {}): Promise<Response> {
    try {
      return await this.http.request(path, init);
    } catch (error) {
      // ApiError words a 404 for conversations.
      if (error instanceof ApiError && error.notFound) throw new ApiError('That key is not there any more.', 404, error.code);
      throw error;
    }
  }
}

