import type { Principal } from '../auth/Principal.js';

/** Named accounts' user ids start with this (UserStore); invite users' with `u_` (createTokenService). */
const ACCOUNT_ID_PREFIX = 'a_';
/** Marks the key of an address; no user id starts with it. */
const ADDRESS_KEY_PREFIX = 'ip:';

/** Whether a user id is a named account's (`a_…`) rather than an invite user's. */
export function isAccountId(userId: string): boolean {
  return userId.startsWith(ACCOUNT_ID_PREFIX);
}

/** Whether a budget key is an address's (charged to the per-address limiters) rather than a user's. */
export function isAddressKey(key: string): boolean {
  return key.startsWith(ADDRESS_KEY_PREFIX);
}

/**
 * The keys a user's reply and token budgets are charged to (Limiters.generation,
 * reserveTokens, refundTokens).
 *
 * A named account is one person, possibly on several devices: its budgets are the account's.
 * Anyone else is an invite user, and every invite login mints a new one with fresh budgets, so
 * the budgets also hold per IP address: re-joining from the same address does not reset them.
 * An id that is not an account's counts as an invite user's, so a new kind of identity is
 * charged to its address until it is deliberately exempted here.
 */
export function budgetKeysOf(principal: Pick<Principal, 'userId'>, ip: string): readonly string[] {
  if (isAccountId(principal.userId)) return [principal.userId];
  return [principal.userId, `${ADDRESS_KEY_PREFIX}${ip}`];
}
