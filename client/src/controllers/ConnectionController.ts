import type { ReactiveController, ReactiveControllerHost } from 'lit';
import { CloseCode } from '../../../shared/errorCodes.js';
import { BEARER_PREFIX, PROTOCOL_VERSION } from '../../../shared/limits.js';
import { ServerFrame, type ClientFrame, type ReadyFrame } from '../../../shared/protocol.js';
import { RefreshResult, type TokenBroker } from '../auth/TokenBroker.js';
import { formatWait } from '../util/describeError.js';

export const ConnectionState = {
  /** No credentials: the join form shows. */
  signedOut: 'signed-out',
  connecting: 'connecting',
  connected: 'connected',
  /** Lost; a new attempt is scheduled with backoff. */
  reconnecting: 'reconnecting',
} as const;
export type ConnectionState = (typeof ConnectionState)[keyof typeof ConnectionState];

export const NoticeTone = { info: 'info', warning: 'warning', error: 'error' } as const;
export type NoticeTone = (typeof NoticeTone)[keyof typeof NoticeTone];
export interface Notice {
  readonly text: string;
  readonly tone: NoticeTone;
}

export interface ConnectionHandlers {
  /** Every valid frame except the connection's own (`refreshed`). */
  frame(frame: ServerFrame): void;
  /**
   * The socket closed. `resumable`: it dropped, and a reconnect follows to the same server and
   * session, so replies the server keeps can be resumed. False for a sign-out, an auth close
   * (4401/4403: the server ended those requests first) and a server restart (1001).
   */
  disconnected(resumable: boolean): void;
  /** Signed out for good (expired, revoked, logged out elsewhere); `reason` says why. */
  signedOut(reason: string | undefined): void;
}

const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 15_000;
/** Refresh this long before the connection's token expires (the server closes it with 4401 then). */
const REFRESH_MARGIN_MS = 60_000;

/**
 * The socket's whole lifecycle, for the element that hosts it: connect with the bearer
 * subprotocol, validate every frame, keep the connection's token fresh in-band, and reconnect
 * with jittered exponential backoff. Close codes turn into notices people can act on.
 */
export class ConnectionController implements ReactiveController {
  state: ConnectionState = ConnectionState.signedOut;
  ready: ReadyFrame | undefined;
  notice: Notice | undefined;
  /** When the next reconnect attempt happens (epoch ms), while reconnecting. */
  retryAt: number | undefined;

  private socket: WebSocket | undefined;
  private attempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private noticeTimer: ReturnType<typeof setTimeout> | undefined;
  /** The connection's own expiry, from `ready` or `refreshed`. */
  private expiresAt = 0;
  private restarting = false;
  /** The last attempt closed before the server said `ready`: maybe the token is no good. */
  private failedBeforeReady = false;

  constructor(
    private readonly host: ReactiveControllerHost,
    private readonly broker: TokenBroker,
    private readonly handlers: ConnectionHandlers,
  ) {
    host.addController(this);
  }

  hostConnected(): void {
    window.addEventListener('online', this.wake);
    document.addEventListener('visibilitychange', this.wake);
    this.broker.addEventListener('token', this.onToken);
    this.broker.addEventListener('signed-out', this.onSignedOutElsewhere);
  }

  hostDisconnected(): void {
    window.removeEventListener('online', this.wake);
    document.removeEventListener('visibilitychange', this.wake);
    this.broker.removeEventListener('token', this.onToken);
    this.broker.removeEventListener('signed-out', this.onSignedOutElsewhere);
    this.teardown();
  }

  get connected(): boolean {
    return this.state === ConnectionState.connected;
  }

  /** Opens the socket with the broker's current token. */
  start(): void {
    this.teardown();
    this.attempt = 0;
    this.restarting = false;
    this.setNotice(undefined);
    this.open();
  }

  /** Sends a frame if the socket is open and ready. */
  send(frame: ClientFrame): boolean {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN || !this.connected) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  /** Stops everything and shows the join form (`reason` explains why, if it was not the user's choice). */
  signOut(reason?: string): void {
    this.teardown();
    this.state = ConnectionState.signedOut;
    this.ready = undefined;
    this.retryAt = undefined;
    this.setNotice(undefined);
    // Also ends replies still waiting to be resumed from an earlier drop.
    this.handlers.disconnected(false);
    this.handlers.signedOut(reason);
    this.host.requestUpdate();
  }

  private open(): void {
    const token = this.broker.token;
    if (!token) {
      this.signOut('Please join again.');
      return;
    }
    this.state = this.attempt === 0 && !this.restarting ? ConnectionState.connecting : ConnectionState.reconnecting;
    this.retryAt = undefined;
    this.host.requestUpdate();
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
    const socket = new WebSocket(url, [PROTOCOL_VERSION, `${BEARER_PREFIX}${token.token}`]);
    this.socket = socket;
    let gotReady = false;
    socket.onmessage = (event: MessageEvent) => {
      if (this.socket !== socket) return;
      const frame = parseFrame(event.data);
      if (!frame) return;
      if (frame.type === 'ready') {
        gotReady = true;
        this.onReady(frame);
      } else if (frame.type === 'refreshed') {
        this.scheduleRefresh(frame.expiresAt);
        return;
      }
      this.handlers.frame(frame);
    };
    socket.onclose = (event: CloseEvent) => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      this.failedBeforeReady = !gotReady;
      this.onClose(event.code);
    };
  }

  private onReady(frame: ReadyFrame): void {
    const restarted = this.restarting;
    this.ready = frame;
    this.state = ConnectionState.connected;
    this.attempt = 0;
    this.restarting = false;
    this.failedBeforeReady = false;
    this.retryAt = undefined;
    this.setNotice(restarted ? { text: 'Reconnected. The server restarted, so replies that were running stopped.', tone: NoticeTone.info } : undefined, 10_000);
    this.scheduleRefresh(frame.expiresAt);
    this.host.requestUpdate();
  }

  private onClose(code: number): void {
    clearTimeout(this.refreshTimer);
    this.handlers.disconnected(code !== CloseCode.revoked && code !== CloseCode.tokenExpired && code !== CloseCode.goingAway);
    switch (code) {
      case CloseCode.revoked:
        this.broker.forget();
        this.signOut('You were signed out.');
        return;
      case CloseCode.tokenExpired:
        // The token ran out before an in-band refresh landed: get a new one and come straight back.
        this.attempt = 0;
        this.scheduleReconnect(0, { text: 'Your session token expired. Renewing it…', tone: NoticeTone.warning }, true);
        return;
      case CloseCode.goingAway:
        this.restarting = true;
        this.scheduleReconnect(undefined, { text: 'The server is restarting. Reconnecting…', tone: NoticeTone.warning });
        return;
      case CloseCode.flood:
        this.scheduleReconnect(Math.max(5000, this.backoff()), { text: 'Too many messages too fast: the server closed the connection.', tone: NoticeTone.error });
        return;
      case CloseCode.messageTooBig:
        this.scheduleReconnect(undefined, {
          text: `A message was larger than the server accepts${this.ready ? ` (${this.ready.limits.maxFrameBytes.toLocaleString('en')} bytes)` : ''}.`,
          tone: NoticeTone.error,
        });
        return;
      case CloseCode.policyViolation:
        this.scheduleReconnect(undefined, { text: 'The connection fell too far behind the server.', tone: NoticeTone.warning });
        return;
      default:
        this.scheduleReconnect(undefined, { text: this.ready ? 'Connection lost. Reconnecting…' : 'Cannot reach the server. Retrying…', tone: NoticeTone.warning });
    }
  }

  private backoff(): number {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** this.attempt);
    return Math.round(base * (0.5 + Math.random() * 0.5));
  }

  private scheduleReconnect(delayMs: number | undefined, notice: Notice, refreshFirst = false): void {
    const delay = delayMs ?? this.backoff();
    this.attempt++;
    this.state = ConnectionState.reconnecting;
    this.retryAt = Date.now() + delay;
    this.setNotice(notice);
    this.host.requestUpdate();
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => void this.reconnect(refreshFirst), delay);
  }

  private async reconnect(refreshFirst: boolean): Promise<void> {
    this.reconnectTimer = undefined;
    const token = this.broker.token;
    if (!token) {
      this.signOut('Please join again.');
      return;
    }
    const expiring = token.expiresAt - this.broker.serverNow() < 30_000;
    if ((refreshFirst || expiring || this.failedBeforeReady) && this.broker.refreshSupported) {
      const result = await this.broker.refresh();
      if (this.state === ConnectionState.signedOut) return;
      if (result === RefreshResult.signedOut) {
        this.broker.forget();
        this.signOut('Your sign-in expired. Join again.');
        return;
      }
      if (result === RefreshResult.failed && this.failedBeforeReady) {
        // The server is probably down: keep backing off.
        this.scheduleReconnect(undefined, this.notice ?? { text: 'Cannot reach the server. Retrying…', tone: NoticeTone.warning });
        return;
      }
    }
    if (!this.broker.refreshSupported && (this.broker.token?.expiresAt ?? 0) <= this.broker.serverNow()) {
      this.broker.forget();
      this.signOut('Your session ended. Join again.');
      return;
    }
    this.open();
  }

  /** Refreshes the token shortly before the connection expires, then extends the connection in-band. */
  private scheduleRefresh(expiresAt: number): void {
    this.expiresAt = expiresAt;
    clearTimeout(this.refreshTimer);
    const lifetime = expiresAt - this.broker.serverNow();
    // A small random spread, so that of several tabs one refreshes and the others get its token.
    const lead = Math.min(REFRESH_MARGIN_MS, lifetime / 4) + Math.random() * Math.min(5000, lifetime / 10);
    this.refreshTimer = setTimeout(() => void this.refreshNow(), Math.max(1000, lifetime - lead));
  }

  private async refreshNow(): Promise<void> {
    const token = this.broker.token;
    // Another tab may already have handed over a token that outlives this connection.
    if (token && token.expiresAt > this.expiresAt + 1000) {
      this.sendRefresh();
      return;
    }
    if (!this.broker.refreshSupported) {
      this.setNotice({ text: 'This server cannot renew sessions: you will need to join again in a few minutes.', tone: NoticeTone.warning });
      this.host.requestUpdate();
      return;
    }
    const result = await this.broker.refresh();
    if (result === RefreshResult.ok) {
      // The `token` event sends it in-band.
      return;
    }
    if (result === RefreshResult.signedOut) {
      this.broker.forget();
      this.signOut('Your sign-in expired. Join again.');
      return;
    }
    // Failed for now (network, rate limit): try again before the connection runs out.
    if (this.expiresAt - this.broker.serverNow() > 5000) this.refreshTimer = setTimeout(() => void this.refreshNow(), 5000);
  }

  private sendRefresh(): void {
    const token = this.broker.token;
    if (token && token.expiresAt > this.expiresAt) this.send({ type: 'refresh', token: token.token });
  }

  private readonly onToken = (): void => {
    if (this.connected) this.sendRefresh();
  };

  private readonly onSignedOutElsewhere = (): void => {
    if (this.state !== ConnectionState.signedOut) this.signOut('You signed out in another tab.');
  };

  /** Back online, or the tab became visible: retry now instead of waiting out the backoff. */
  private readonly wake = (): void => {
    if (document.visibilityState === 'hidden') return;
    if (this.state === ConnectionState.reconnecting && this.reconnectTimer !== undefined) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = undefined;
      void this.reconnect(false);
    }
  };

  private setNotice(notice: Notice | undefined, clearAfterMs?: number): void {
    clearTimeout(this.noticeTimer);
    this.notice = notice;
    if (notice && clearAfterMs !== undefined) {
      this.noticeTimer = setTimeout(() => {
        if (this.notice === notice) {
          this.notice = undefined;
          this.host.requestUpdate();
        }
      }, clearAfterMs);
    }
  }

  private teardown(): void {
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.refreshTimer);
    this.reconnectTimer = undefined;
    const socket = this.socket;
    this.socket = undefined;
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000);
  }

  /** "Reconnecting in 4 s". */
  describeRetry(now = Date.now()): string {
    return this.retryAt === undefined ? '' : `in ${formatWait(this.retryAt - now)}`;
  }
}

function parseFrame(data: unknown): ServerFrame | undefined {
  if (typeof data !== 'string') return undefined;
  let json: unknown;
  try {
    json = JSON.parse(data);
  } catch {
    return undefined;
  }
  const parsed = ServerFrame.safeParse(json);
  if (!parsed.success) {
    console.warn('Parley: ignored a server frame that does not match the protocol', parsed.error.issues[0]?.message);
    return undefined;
  }
  return parsed.data;
}
