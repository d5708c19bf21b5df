/** What a user may do. Invite users are always `user`; `admin` comes only from a named account. */
export const Role = { user: 'user', admin: 'admin' } as const;
export type Role = (typeof Role)[keyof typeof Role];

export function isRole(value: unknown): value is Role {
  return value === Role.user || value === Role.admin;
}

/** The verified identity behind a connection, taken from its access token. */
export interface Principal {
  /** Stable user id: the token's `sub`. */
  readonly userId: string;
  /** Display name chosen at join time. Not unique, not trusted for authorization. */
  readonly name: string;
  /** The token's `role` claim; authorizes the admin routes. */
  readonly role: Role;
  /** Epoch ms at which the access token expires. */
  readonly expiresAt: number;
}
