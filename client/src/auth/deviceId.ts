/** Where the page keeps its device id. */
const DEVICE_KEY = 'parley.device';
const DEVICE_ID = /^[A-Za-z0-9_-]{16,64}$/;

/**
 * A random id this browser keeps and sends with every join (`TokenRequest.device`), so that an
 * admin who revokes an invite user can keep this device from joining again. It identifies the
 * browser profile to this server only; it is not a secret, and clearing site data makes a new
 * one. Undefined when storage is unavailable (the join then carries no device).
 */
export function deviceId(): string | undefined {
  try {
    const kept = localStorage.getItem(DEVICE_KEY);
    if (kept !== null && DEVICE_ID.test(kept)) return kept;
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    const id = btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    localStorage.setItem(DEVICE_KEY, id);
    return id;
  } catch {
    return undefined;
  }
}
