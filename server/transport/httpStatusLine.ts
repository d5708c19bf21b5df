import { STATUS_CODES } from 'node:http';

/** "404 Not Found", the form uWS's writeStatus and raw socket responses need. */
export function httpStatusLine(status: number): string {
  return `${status} ${STATUS_CODES[status] ?? 'Unknown'}`;
}
