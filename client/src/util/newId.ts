let counter = 0;

/**
 * A short random id of `[a-z0-9]` (valid as a protocol request id). Not `crypto.randomUUID`:
 * that only exists in secure contexts, and Parley is usually opened over plain http on a LAN.
 * `crypto.getRandomValues` exists everywhere.
 */
export function newId(prefix = 'r'): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  const random = Array.from(bytes, (byte) => byte.toString(36).padStart(2, '0')).join('');
  return `${prefix}${random}${(counter++).toString(36)}`;
}
