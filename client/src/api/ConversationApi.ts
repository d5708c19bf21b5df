import { ConversationResponse, DeleteAllResponse, type RenameRequest } from '../../../shared/protocol.js';
import type { TokenBroker } from '../auth/TokenBroker.js';
import { ApiError } from './ApiError.js';
import { AuthorizedHttp } from './AuthorizedHttp.js';

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
 * The stored-conversation HTTP API (docs/protocol.md), through AuthorizedHttp (the access token,
 * one refresh on a 401). Every answer is validated with the shared schemas.
 */
export class ConversationApi {
  private readonly http: AuthorizedHttp;

  constructor(broker: TokenBroker) {
    this.http = new AuthorizedHttp(broker);
  }

  /** One conversation with its messages, oldest first. */
  async get(serverId: string): Promise<ConversationResponse> {
    return this.http.json(await this.http.request(this.path(serverId)), ConversationResponse);
  }

  async rename(serverId: string, title: string): Promise<void> {
    const body: RenameRequest = { title };
    await this.http.request(this.path(serverId), { method: 'PATCH', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  }

  /** Deletes one conversation (the server stops its reply first). */
  async remove(serverId: string): Promise<void> {
    await this.http.request(this.path(serverId), { method: 'DELETE' });
  }

  /** Deletes every conversation of the user; resolves with how many there were. */
  async removeAll(): Promise<number> {
    return (await this.http.json(await this.http.request(BASE, { method: 'DELETE' }), DeleteAllResponse)).deleted;
  }

  /** One conversation (`serverId`) or all of them, as a file. */
  async export(format: ExportFormat, serverId?: string): Promise<Download> {
    const path = `${serverId === undefined ? BASE : this.path(serverId)}/export?format=${format}`;
    const response = await this.http.request(path);
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
}

/** The file name from `content-disposition: attachment; filename="…"` (the server's names hold only ids). */
function fileNameOf(response: Response): string | undefined {
  const match = /filename="([^"]+)"/i.exec(response.headers.get('content-disposition') ?? '');
  const name = match?.[1]?.replace(/[^A-Za-z0-9._-]/g, '_');
  return name || undefined;
}
