import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { createAuthService, type AuthService } from '../../server/auth/createAuthService.js';
import { createTokenService, type TokenService } from '../../server/auth/createTokenService.js';
import { loadOrCreateSigningKey } from '../../server/auth/loadOrCreateSigningKey.js';
import { DEFAULT_REUSE_GRACE_MS, SessionStore } from '../../server/auth/SessionStore.js';
import { UserStore } from '../../server/auth/UserStore.js';

const dirs: string[] = [];
after(async () => {
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

/** A resolvable promise: a test holds work at a point with it, and lets it go. */
function latch(): { promise: Promise<void>; open: () => void } {
  let open = () => undefined as void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

interface Setup {
  readonly auth: AuthService;
  readonly tokens: TokenService;
  readonly sessions: SessionStore;
  readonly clock: { now: number };
}

async function setup(options: { afterRotate?: (family: string) => Promise<void>; wrapTokens?: (tokens: TokenService) => TokenService } = {}): Promise<Setup> {
  const dir = await mkdtemp(join(tmpdir(), 'parley-auth-'));
  dirs.push(dir);
  const clock = { now: Date.now() };
  const sessions = await SessionStore.load(dir, { now: () => clock.now });
  const tokens = createTokenService({ key: await loadOrCreateSigningKey(dir), ttlSeconds: 300, epochs: sessions });
  const auth = createAuthService({
    tokens: options.wrapTokens ? options.wrapTokens(tokens) : tokens,
    sessions,
    users: new UserStore(dir),
    refreshTtlSeconds: 3600,
    ...(options.afterRotate ? { afterRotate: options.afterRotate } : {}),
  });
  return { auth, tokens, sessions, clock };
}

/** Starts a refresh, holds it just after its rotation, runs `interrupt` there, then lets it finish. */
async function refreshInterruptedAfterRotate(interrupt: (auth: Awaited<ReturnType<typeof setup>>['auth'], sessions: Awaited<ReturnType<typeof setup>>['sessions'], userId: string) => Promise<unknown>) {
  const arrived = latch();
  const release = latch();
  const { auth, tokens, sessions } = await setup({
    afterRotate: async () => {
      arrived.open();
      await release.promise;
    },
  });
  const login = await auth.loginWithInvite('A');
  const pending = auth.refresh([login.refresh.token], login.binding);
  await arrived.promise;
  await interrupt(auth, sessions, login.access.principal.userId);
  release.open();
  return { outcome: await pending, tokens };
}

describe('a refresh racing a revocation', () => {
  test('a revocation that lands between the rotation and the token gets no token out: the refresh is refused', async () => {
    const { outcome, tokens } = await refreshInterruptedAfterRotate((auth, _sessions, userId) => auth.revokeUser(userId));
    if (outcome.ok) await assert.rejects(tokens.verifyAccessToken(outcome.session.access.token), 'a token handed out after the revocation must not verify');
    assert.equal(outcome.ok, false);
    assert.equal(!outcome.ok && outcome.reason, 'revoked');
  });

  test('an epoch raised at that point (the user signed out elsewhere) refuses the refresh too', async () => {
    const { outcome } = await refreshInterruptedAfterRotate((_auth, sessions, userId) => sessions.bumpEpoch(userId));
    assert.equal(outcome.ok, false);
  });

  test('a revocation that lands while the access token is being signed leaves that token dead', async () => {
    const arrived = latch();
    const release = latch();
    let holding = false;
    const { auth, tokens } = await setup({
      // Signing is async: hold the refresh's issue itself, after every check of the refresh has passed.
      wrapTokens: (real) => ({
        ...real,
        async issueAccessToken(user, options) {
          if (holding) {
            arrived.open();
            await release.promise;
          }
          return real.issueAccessToken(user, options);
        },
      }),
    });
    const login = await auth.loginWithInvite('A');
    holding = true;
    const pending = auth.refresh([login.refresh.token], login.binding);
    await arrived.promise;
    await auth.revokeUser(login.access.principal.userId);
    release.open();
    const outcome = await pending;
    assert.ok(outcome.ok, 'the checks had passed');
    await assert.rejects(tokens.verifyAccessToken(outcome.session.access.token), 'the token carries the epoch the refresh checked, below the new one');
  });
});

describe('refresh and the binding', () => {
  test('a sign-in hands out a binding value; a refresh needs it: without it, or with another, the cookie is refused and the session lives on', async () => {
    const { auth } = await setup();
    const login = await auth.loginWithInvite('A');
    assert.match(login.binding ?? '', /^[A-Za-z0-9_-]{43}$/);
    const other = await auth.loginWithInvite('B');
    for (const binding of [undefined, 'guess', other.binding]) {
      const outcome = await auth.refresh([login.refresh.token], binding);
      assert.equal(!outcome.ok && outcome.reason, 'unbound', String(binding));
    }
    const outcome = await auth.refresh([login.refresh.token], login.binding);
    assert.ok(outcome.ok);
    assert.equal(outcome.session.binding, undefined, 'a refresh does not hand the binding out again');
  });

  test('with two cookies (another port of the host set its own), the one bound to the binding is used; with no binding, neither', async () => {
    const { auth, tokens } = await setup();
    const victim = await auth.loginWithInvite('Victim');
    const tossed = await auth.loginWithInvite('Attacker');
    for (const cookies of [[tossed.refresh.token, victim.refresh.token], [victim.refresh.token, tossed.refresh.token]]) {
      assert.equal(!(await auth.refresh(cookies, undefined)).ok && 'refused', 'refused');
    }
    const outcome = await auth.refresh([tossed.refresh.token, victim.refresh.token], victim.binding);
    assert.ok(outcome.ok);
    assert.equal((await tokens.verifyAccessToken(outcome.session.access.token)).userId, victim.access.principal.userId);
    assert.ok((await auth.refresh([tossed.refresh.token], tossed.binding)).ok, 'the other session is untouched');
  });
});

describe('grace window', () => {
  test('a refresh whose answer was lost is retried with the old cookie: same successor, no revocation; after the window it revokes', async () => {
    const { auth, tokens, clock } = await setup();
    const login = await auth.loginWithInvite('A');
    const first = await auth.refresh([login.refresh.token], login.binding);
    assert.ok(first.ok);
    const retry = await auth.refresh([login.refresh.token], login.binding);
    assert.ok(retry.ok, 'the retry is answered');
    assert.equal(retry.session.refresh.token, first.session.refresh.token, 'the same successor cookie');
    await tokens.verifyAccessToken(first.session.access.token);
    await tokens.verifyAccessToken(retry.session.access.token);

    clock.now += DEFAULT_REUSE_GRACE_MS + 1;
    const late = await auth.refresh([login.refresh.token], login.binding);
    assert.equal(!late.ok && late.reason, 'reused');
    await assert.rejects(tokens.verifyAccessToken(first.session.access.token), 'reuse revokes the access tokens too');
    assert.equal((await auth.refresh([first.session.refresh.token], login.binding)).ok, false, 'and the family');
  });
});

describe('logout credentials', () => {
  test('sessionUser names the user only for a cookie that could refresh now: not a rotated, revoked or unbound one', async () => {
    const { auth, clock } = await setup();
    const login = await auth.loginWithInvite('A');
    const userId = login.access.principal.userId;
    assert.equal(await auth.sessionUser([login.refresh.token], login.binding), userId);
    assert.equal(await auth.sessionUser([login.refresh.token], undefined), undefined, 'without the binding');
    const rotated = await auth.refresh([login.refresh.token], login.binding);
    assert.ok(rotated.ok);
    clock.now += DEFAULT_REUSE_GRACE_MS + 1;
    assert.equal(await auth.sessionUser([login.refresh.token], login.binding), undefined, 'rotated away');
    assert.equal(await auth.sessionUser([rotated.session.refresh.token], login.binding), userId);
    await auth.revokeUser(userId);
    assert.equal(await auth.sessionUser([rotated.session.refresh.token], login.binding), undefined, 'revoked');
  });
});
