import type { TransportLimits } from './Transport.js';

/** Where documents are uploaded: the one route whose body is spooled to a file (BodySpool), up to maxUploadBytes. */
export const UPLOAD_PATH = '/api/documents';

/** Whether this request's body is an upload: written to a temporary file as it arrives, never held whole in memory. */
export function isUpload(method: string, path: string): boolean {
  return method === 'POST' && path === UPLOAD_PATH;
}

/**
 * The largest request body a path may carry. The OpenAI-compatible API under /v1/ receives whole
 * conversations; every other route takes small JSON. Decided on the same path string the handler
 * receives, so a larger body only ever reaches a /v1/ route.
 */
export function maxBodyBytes(path: string, limits: TransportLimits, method = 'POST'): number {
  if (isUpload(method, path)) return limits.maxUploadBytes;
  return path.startsWith('/v1/') ? limits.maxApiBodyBytes : limits.maxHttpBodyBytes;
}
