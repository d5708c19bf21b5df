/** scheme://host[:port] and nothing else: no path, query, fragment, user info or whitespace. */
const BARE_ORIGIN = /^[a-z][a-z0-9+.-]*:\/\/[^/?#@\s\\]+$/i;

/**
 * The serialised origin (`http://host:port`, scheme and host lower-cased, default port
 * dropped) of an http(s) bare origin, or undefined for anything else, including `null`.
 * Browsers send Origin already in this form, so comparing the results exactly is an exact match.
 */
export function normaliseOrigin(value: string): string | undefined {
  if (!BARE_ORIGIN.test(value)) return undefined;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
  return url.origin;
}
