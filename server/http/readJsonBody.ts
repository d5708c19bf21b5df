import type * as z from 'zod/mini';
import { BadRequestError } from '../ParleyError.js';
import type { HttpRequest } from '../transport/Transport.js';

/** The request's JSON body, validated by `schema`; 415 unless it is application/json, 400 naming `expected` when it does not fit. */
export function readJsonBody<T>(request: HttpRequest, schema: z.ZodMiniType<T>, expected: string): T {
  if (!(request.headers['content-type'] ?? '').toLowerCase().startsWith('application/json')) throw new BadRequestError('Send application/json.', 415);
  let body: unknown;
  try {
    body = JSON.parse(request.body.toString('utf8'));
  } catch {
    throw new BadRequestError('Body is not valid JSON.');
  }
  const parsed = schema.safeParse(body);
  if (!parsed.success) throw new BadRequestError(`Expected ${expected}.`);
  return parsed.data;
}
