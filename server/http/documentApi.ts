import { readFile } from 'node:fs/promises';
import { ErrorCode } from '../../shared/errorCodes.js';
import type { DocumentInfo, DocumentResponse } from '../../shared/protocol.js';
import type { TokenService } from '../auth/createTokenService.js';
import type { Documents } from '../documents/Documents.js';
import type { StoredDocument } from '../documents/DocumentRepository.js';
import { LimitRefusedError } from '../limits/LimitRefusedError.js';
import type { Limiters } from '../limits/Limiters.js';
import { BadRequestError, NotFoundError, ParleyError } from '../ParleyError.js';
import { UPLOAD_PATH } from '../transport/maxBodyBytes.js';
import type { HttpRequest, HttpResponse } from '../transport/Transport.js';
import { authenticateAccessToken } from './authenticateAccessToken.js';
import { toHttpResponse } from './toHttpResponse.js';

export interface DocumentApiDeps {
  readonly tokens: TokenService;
  readonly documents: Documents | undefined;
  readonly limiters: Limiters;
}

export const DOCUMENTS_PATH = UPLOAD_PATH;

/**
 * Documents, for the signed-in user only (bearer access token):
 * - POST   /api/documents?name=<file name>   the raw file as the body (any content type): 201 {document}
 * - GET    /api/documents/{id}               its metadata
 * - DELETE /api/documents/{id}               204
 *
 * The transport has already spooled the upload's body to a temporary file, cut off at
 * maxDocumentBytes with 413 `document_too_large` (BodySpool); what it is is decided here by its
 * content (readDocument). Invariants: another user's id answers 404 as an unknown one does;
 * requests count against the owner's frame rate; the file name is only ever shown, never a path;
 * nothing here logs document text or names.
 */
export async function handleDocumentApi(request: HttpRequest, deps: DocumentApiDeps): Promise<HttpResponse> {
  try {
    const principal = await authenticateAccessToken(request, deps.tokens);
    const rate = await deps.limiters.frame(`api:${principal.userId}`);
    if (!rate.ok) throw new LimitRefusedError(rate, 'Too many requests; slow down.');
    if (!deps.documents) throw new NotFoundError('This server takes no documents.');
    return await dispatch(request, principal.userId, deps.documents);
  } catch (error) {
    if (error instanceof ParleyError) return toHttpResponse(error, error.code === ErrorCode.unauthorized ? { 'www-authenticate': 'Bearer' } : {});
    throw error;
  }
}

async function dispatch(request: HttpRequest, userId: string, documents: Documents): Promise<HttpResponse> {
  const parts = request.path.slice(DOCUMENTS_PATH.length).split('/').filter(Boolean);
  if (parts.length === 0) {
    if (request.method !== 'POST') return methodNotAllowed('POST');
    // The transport spools every POST here; a body without a file is a transport fault, not the client's.
    if (request.bodyFile === undefined) throw new Error('an upload reached the document API without its spooled body');
    const name = new URLSearchParams(request.query).get('name') ?? '';
    const bytes = await readFile(request.bodyFile);
    const document = await documents.ingest(userId, name, bytes);
    return json(201, { document: infoOf(document) } satisfies DocumentResponse);
  }
  if (parts.length !== 1) throw new NotFoundError('No such endpoint.');
  const id = safeDecode(parts[0] ?? '');
  if (request.method === 'GET' || request.method === 'HEAD') {
    const document = await documents.get(userId, id);
    if (!document) throw notFound();
    return json(200, { document: infoOf(document) } satisfies DocumentResponse);
  }
  if (request.method === 'DELETE') {
    if (!(await documents.delete(userId, id))) throw notFound();
    return { status: 204, headers: { 'cache-control': 'no-store' }, body: '' };
  }
  return methodNotAllowed('GET, DELETE');
}

export function infoOf(document: StoredDocument): DocumentInfo {
  return {
    id: document.id,
    name: document.name,
    size: document.size,
    kind: document.kind,
    chars: document.chars,
    createdAt: document.createdAt,
    ...(document.conversationId === undefined ? {} : { conversationId: document.conversationId }),
  };
}

function safeDecode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw notFound();
  }
}

function notFound(): ParleyError {
  return new ParleyError(ErrorCode.documentNotFound, 'No such document.', { httpStatus: 404 });
}

function methodNotAllowed(allow: string): HttpResponse {
  return toHttpResponse(new BadRequestError(`Use ${allow}.`, 405), { allow });
}

function json(status: number, value: unknown): HttpResponse {
  return { status, headers: { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }, body: JSON.stringify(value) };
}
