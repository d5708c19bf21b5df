/** The verified identity behind a connection, taken from its access token. */
export interface Principal {
  /** Stable user id: the token's `sub`. */
  readonly userId: string;
  /** Display name chosen at join time. Not unique, not trusted for authorization. */
  readonly name: string;
  /** Epoch ms at which the access token expires. */
  readonly expiresAt: number;
}
