/** Bounds of `listConversations`: a listing is one page, never every conversation of a user. */
export const ListLimit = { default: 100, max: 1000 } as const;

/** The number of conversations a listing returns; a limit outside 1 to ListLimit.max is a caller's bug. */
export function listLimit(limit: number | undefined): number {
  if (limit === undefined) return ListLimit.default;
  if (!Number.isInteger(limit) || limit < 1 || limit > ListLimit.max) {
    throw new RangeError(`listConversations limit must be an integer from 1 to ${ListLimit.max}, got ${limit}`);
  }
  return limit;
}
