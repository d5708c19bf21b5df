/**
 * Access tokens from a Parley server's invite sign-in (`POST /api/token`), one per user name,
 * fetched once: each sign-in makes a new user, so a name asked for again must get the same one.
 */
export class InviteTokens {
  private readonly tokens = new Map<string, Promise<string>>();

  constructor(
    private readonly origin: string,
    private readonly invite: string,
  ) {}

  get(name: string): Promise<string> {
    let token = this.tokens.get(name);
    if (token === undefined) {
      token = (async () => {
        const response = await fetch(`${this.origin}/api/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', origin: this.origin },
          body: JSON.stringify({ invite: this.invite, name }),
        });
        if (response.status !== 200) throw new Error(`POST /api/token: ${response.status} ${await response.text()}`);
        return ((await response.json()) as { token: string }).token;
      })();
      token.catch(() => this.tokens.delete(name));
      this.tokens.set(name, token);
    }
    return token;
  }
}
