import type * as z from 'zod/mini';
import { ConversationResponse, DeleteAllResponse, type RenameRequest } from '../../../shared/protocol.js';
import { RefreshResult, type TokenBroker } from '../auth/TokenBroker.js';
import { ApiError } from './ApiError.js';

/** The formats `GET …/export?format=` offers. */
export const ExportFormat = { markdown: 'markdown', json: 'json' } as const;
export type ExportFormat = (typeof ExportFormat)[keyof typeof ExportFormat];

/** A file the server sent as an attachment. */
export interface Download {
  readonly blob: Blob;
  readonly fileName: string;
}

const BASE = '/api/conversations';

/**
 * The stored-conversation HTTP API (docs/protocol.md), with the broker's access token as a
 * Bearer token. A 401 gets one refresh and one retry: the access token lives minutes, and a tab
 * that was asleep may hold an expired one. Every answer is validated with the shared schemas.
 */
export class ConversationApi {
  constructor(private readonly broker: TokenBroker) {}

  /** One conversation with its messages, oldest first. */
  async get(serverId: string): Promise<ConversationResponse> {
    return this.json(await this.request(this.path(serverId)), ConversationResponse);
  }

  async rename(serverId: string, title: string): Promise<void> {
    const body: RenameRequest = { title };
    await this.request(this.path(serverId), { method: 'PATCH', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  }

  /** Deletes one conversation (the server stops its reply first). */
  async remove(serverId: string): Promise<void> {
    await this.request(this.path(serverId), { method: 'DELETE' });
  }

  /** Deletes every conversation of the user; resolves with how many there were. */
  async removeAll(): Promise<number> {
    return (await this.json(await this.request(BASE, { method: 'DELETE' }), DeleteAllResponse)).deleted;
  }

  /** One conversation (`serverId`) or all of them, as a file. */
  async export(format: ExportFormat, serverId?: string): Promise<Download> {
    const path = `${serverId === undefined ? BASE : this.path(serverId)}/export?format=${format}`;
    const response = await this.request(path);
    let blob: Blob;
    try {
      blob = await response.blob();
    } catch {
      throw ApiError.unreachable();
    }
    return { blob, fileName: fileNameOf(response) ?? `parley-conversations.${format === ExportFormat.json ? 'json' : 'md'}` };
  }

  private path(serverId: string): string {
    return `${BASE}/${encodeURIComponent(serverId)}`;
  }

  private async request(path: string, init: RequestInit = {}): Promise<Response> {
    if (!this.broker.token) await this.broker.refresh();
    let response = await this.send(path, init);
    if (response.status === 401 && this.broker.refreshSupported) {
      const refreshed = await this.broker.refresh();
      if (refreshed === RefreshResult.ok) response = await this.send(path, init);
    }
    if (!response.ok) throw await ApiError.from(response);
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

/** The file name from `content-disposition: attachment; filename="…"` (the server's names hold only ids). */
function fileNameOf(response: Response): string | undefined {
  const match = /filename="([^"]+)"/i.exec(response.headers.get('content-disposition') ?? '');
  const name = match?.[1]?.replace(/[^A-Za-z0-9._-]/g, '_');
  return name || undefined;
}
