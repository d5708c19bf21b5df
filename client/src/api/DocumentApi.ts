import { DocumentResponse, type DocumentInfo } from '../../../shared/protocol.js';
import { RefreshResult, type TokenBroker } from '../auth/TokenBroker.js';
import { ApiError } from './ApiError.js';
import { AuthorizedHttp } from './AuthorizedHttp.js';

/** Progress of one upload: the body is on its way (`sent` of `total` bytes), then the server reads it. */
export type UploadProgress = { readonly phase: 'uploading'; readonly sent: number; readonly total: number } | { readonly phase: 'reading' };

const BASE = '/api/documents';

/**
 * Documents attached to messages (docs/protocol.md, "Documents"): the raw file is the body of
 * POST /api/documents?name=…, with the broker's access token. The upload goes through
 * XMLHttpRequest, the one browser API that reports upload progress; a 401 gets one refresh and
 * one retry, as AuthorizedHttp does for the other APIs.
 */
export class DocumentApi {
  private readonly http: AuthorizedHttp;

  constructor(private readonly broker: TokenBroker) {
    this.http = new AuthorizedHttp(broker);
  }

  async upload(file: Blob, name: string, onProgress: (progress: UploadProgress) => void, signal: AbortSignal): Promise<DocumentInfo> {
    if (!this.broker.token) await this.broker.refresh();
    let answer = await this.send(file, name, onProgress, signal);
    if (answer.status === 401 && this.broker.refreshSupported && (await this.broker.refresh()) === RefreshResult.ok) {
      answer = await this.send(file, name, onProgress, signal);
    }
    if (answer.status < 200 || answer.status >= 300) throw documentError(answer.status, answer.body);
    const parsed = DocumentResponse.safeParse(safeJson(answer.body));
    if (!parsed.success) throw new ApiError('The server sent an unexpected answer.', answer.status, 'bad_response');
    return parsed.data.document;
  }

  /** Deletes an upload that was not sent (the server forgets unsent uploads in time anyway). */
  async remove(id: string): Promise<void> {
    await this.http.request(`${BASE}/${encodeURIComponent(id)}`, { method: 'DELETE' });
  }

  private send(file: Blob, name: string, onProgress: (progress: UploadProgress) => void, signal: AbortSignal): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      if (signal.aborted) {
        reject(new DOMException('Upload cancelled', 'AbortError'));
        return;
      }
      const request = new XMLHttpRequest();
      request.open('POST', `${BASE}?name=${encodeURIComponent(name)}`);
      const token = this.broker.token?.token;
      if (token) request.setRequestHeader('authorization', `Bearer ${token}`);
      request.setRequestHeader('content-type', 'application/octet-stream');
      request.upload.onprogress = (event) => onProgress({ phase: 'uploading', sent: event.loaded, total: event.lengthComputable ? event.total : file.size });
      // Every byte is sent: the server is reading the file now (extracting its text).
      request.upload.onload = () => onProgress({ phase: 'reading' });
      request.onload = () => {
        signal.removeEventListener('abort', abort);
        resolve({ status: request.status, body: request.responseText });
      };
      request.onerror = () => {
        signal.removeEventListener('abort', abort);
        reject(ApiError.unreachable());
      };
      request.onabort = () => reject(new DOMException('Upload cancelled', 'AbortError'));
      const abort = (): void => request.abort();
      signal.addEventListener('abort', abort, { once: true });
      request.send(file);
    });
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * A refused upload, with the server's own words: for documents they say what to do (too large,
 * not a text or PDF file, too many). The body is `{ code, message }`, or `{ error: { code, message } }`.
 */
function documentError(status: number, body: string): ApiError {
  const json = safeJson(body) as { code?: unknown; message?: unknown; error?: { code?: unknown; message?: unknown } } | undefined;
  const payload = json?.error && typeof json.error === 'object' ? json.error : json;
  const code = typeof payload?.code === 'string' ? payload.code : `http_${status}`;
  const message = typeof payload?.message === 'string' && payload.message ? payload.message : undefined;
  if (status === 401) return new ApiError('You are not signed in any more.', status, code);
  if (status === 429) return new ApiError(message ?? 'Too many uploads. Try again shortly.', status, code);
  if (status === 413) return new ApiError(message ?? 'This file is too large.', status, code);
  if (status === 415) return new ApiError(message ?? 'This kind of file cannot be attached.', status, code);
  return new ApiError(message ?? `The server answered ${status}.`, status, code);
}
