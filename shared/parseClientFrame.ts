import * as z from 'zod/mini';
import { ClientFrame, CLIENT_FRAME_TYPES } from './protocol.js';
import { ErrorCode } from './errorCodes.js';

// zod/mini ships without messages; English messages make errors name what is wrong.
z.config(z.locales.en());

export type ParseResult =
  | { ok: true; frame: ClientFrame }
  | { ok: false; code: ErrorCode; message: string };

/** Maximum JSON nesting accepted before schema validation; real frames are depth 1. */
const MAX_DEPTH = 4;

/**
 * Parses one text frame from a client. Never throws: every input yields a frame or a
 * stable error code with a message that names what is wrong.
 */
export function parseClientFrame(text: string): ParseResult {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, code: ErrorCode.badJson, message: 'Frame is not valid JSON.' };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, code: ErrorCode.badFrame, message: 'Frame must be a JSON object.' };
  }
  if (depthExceeds(value, MAX_DEPTH)) {
    return { ok: false, code: ErrorCode.badFrame, message: `Frame is nested deeper than ${MAX_DEPTH} levels.` };
  }
  const type = (value as Record<string, unknown>).type;
  if (typeof type !== 'string' || !(CLIENT_FRAME_TYPES as readonly string[]).includes(type)) {
    return {
      ok: false,
      code: ErrorCode.badFrame,
      message: `Unknown frame type; expected one of: ${CLIENT_FRAME_TYPES.join(', ')}.`,
    };
  }
  const result = ClientFrame.safeParse(value);
  if (!result.success) {
    return { ok: false, code: ErrorCode.badFrame, message: describeIssues(result.error) };
  }
  return { ok: true, frame: result.data };
}

function describeIssues(error: z.core.$ZodError): string {
  const first = error.issues.slice(0, 3).map((issue) => {
    const path = issue.path.length > 0 ? issue.path.join('.') : 'frame';
    return `${path}: ${issue.message}`;
  });
  return `Invalid frame: ${first.join('; ')}.`;
}

function depthExceeds(value: unknown, max: number): boolean {
  if (max < 0) return true;
  if (typeof value !== 'object' || value === null) return false;
  for (const child of Object.values(value)) {
    if (depthExceeds(child, max - 1)) return true;
  }
  return false;
}
