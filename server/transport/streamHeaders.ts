/**
 * The head of a streamed response: the transport's headers, then the response's own (same name
 * wins). Framing headers are dropped: the body's length is unknown, so both transports frame it
 * themselves (chunked on HTTP/1.1), and a Content-Length next to chunked encoding would be invalid.
 */
export function streamHeaders(extra: Readonly<Record<string, string>>, own: Readonly<Record<string, string>>): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries({ ...extra, ...own })) {
    const lower = name.toLowerCase();
    if (lower === 'content-length' || lower === 'transfer-encoding') continue;
    headers[name] = value;
  }
  return headers;
}
