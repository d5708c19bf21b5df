import type * as z from 'zod/mini';
import { RefreshResult, type TokenBroker } from '../auth/TokenBroker.js';
import { ApiError } from './ApiError.js';

/**
 * Requests to Parley's own HTTP APIs with the broker's access token as a Bearer token. A 401 gets
 * one refresh and one retry: the access token lives minutes, and a tab that was asleep may hold
 * an expired one. A failed answer becomes an ApiError; `json` validates an answer with a shared schema.
 */
export class AuthorizedHttp {
  constructor(private readonly broker: TokenBroker) {}

  async request(path: string, init: RequestInit = {}): Promise<Response> {
    if (!this.broker.token) await this.broker.refresh();
    let response = await this.send(path, init);
    if (response.status === 401 && this.broker.refreshSupported) {
      const refreshed = await this.broker.refresh();
      if (refreshed === RefreshResult.ok) response = await this.send(path, init);
    }
    if (!response.ok) throw await ApiError.from(response);
    return response;
  }

  async json<T>(response: Response, schema: z.ZodMiniType<T>): Promise<T> {
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
}
