import { css, html, LitElement, nothing } from 'lit';
import { customElement, property } from 'lit/decorators.js';
import type { ModelInfo } from '../../../shared/protocol.js';
import { ConnectionState } from '../controllers/ConnectionController.js';

const stateLabels: Record<ConnectionState, string> = {
  [ConnectionState.signedOut]: 'Signed out',
  [ConnectionState.connecting]: 'Connecting…',
  [ConnectionState.connected]: 'Connected',
  [ConnectionState.reconnecting]: 'Reconnecting…',
};

/**
 * The top bar: the conversation-list toggle (narrow screens), the open conversation's model and
 * whether it is the demo model, the connection state, the user, the API keys panel, and sign-out.
 *
 * Events (bubble, composed): `toggle-sidebar`, `open-keys`, `sign-out`.
 */
@customElement('chat-header')
export class ChatHeader extends LitElement {
  @property({ reflect: true }) state: ConnectionState = ConnectionState.signedOut;
  /** "in 4 s" while reconnecting. */
  @property() retry = '';
  @property({ attribute: false }) model: ModelInfo | undefined;
  @property() userName: string | undefined;
  @property({ type: Boolean }) sidebarOpen = false;

  static override styles = css`
    :host {
      display: block;
      border-bottom: 1px solid var(--border);
      background: var(--surface);
    }
    header {
      display: flex;
      flex-wrap: wrap;
      align-items: center;
      gap: 0.6rem;
      padding: 0.5rem 0.75rem;
      min-height: 3rem;
      box-sizing: border-box;
    }
    h1 {
      font-size: 1.1rem;
      margin: 0;
    }
    .model {
      font-size: 0.8rem;
      color: var(--muted);
      overflow: hidden;
      text-overflow: ellipsis;
      white-space: nowrap;
      min-width: 0;
    }
    .demo {
      font-size: 0.7rem;
      font-weight: 600;
      color: var(--warning);
      border: 1px solid currentColor;
      border-radius: 1rem;
      padding: 0.05rem 0.45rem;
      white-space: nowrap;
    }
    .spacer {
      flex: 1;
    }
    .status {
      display: inline-flex;
      align-items: center;
      gap: 0.35rem;
      font-size: 0.8rem;
      white-space: nowrap;
    }
    .dot {
      width: 0.55rem;
      height: 0.55rem;
      border-radius: 50%;
      background: var(--muted);
    }
    :host([state='connected']) .dot {
      background: var(--ok);
    }
    :host([state='reconnecting']) .dot,
    :host([state='connecting']) .dot {
      background: var(--warning);
    }
    .user {
      font-size: 0.8rem;
      color: var(--muted);
      white-space: nowrap;
    }
    button {
      font: inherit;
      font-size: 0.8rem;
      color: var(--text);
      background: none;
      border: 1px solid var(--border);
      border-radius: 0.5rem;
      padding: 0.3rem 0.6rem;
      cursor: pointer;
      min-height: 2.25rem;
    }
    button:focus-visible {
      outline: 2px solid var(--focus);
      outline-offset: 1px;
    }
    .menu {
      display: none;
    }
    @media (max-width: 760px) {
      .menu {
        display: inline-block;
      }
      .user {
        display: none;
      }
      /* The model gets a line of its own under the bar. */
      .model {
        order: 10;
        flex: 1 0 60%;
      }
      .demo {
        order: 11;
      }
      header {
        row-gap: 0.15rem;
      }
      .status .label-long {
        display: none;
      }
    }
  `;

  protected override render() {
    const label = stateLabels[this.state];
    return html`<header>
      <button type="button" class="menu" aria-expanded=${this.sidebarOpen ? 'true' : 'false'} aria-controls="sidebar" @click=${() => this.emit('toggle-sidebar')}>
        Chats
      </button>
      <h1>Parley</h1>
      ${this.model
        ? html`<span class="model" title=${this.model.name}>${this.model.name}</span>
            ${this.model.demo ? html`<span class="demo" title="Parley's demo model strings words together; it is not an assistant.">demo model</span>` : nothing}`
        : nothing}
      <span class="spacer"></span>
      <span class="status" role="status" aria-live="polite">
        <span class="dot" aria-hidden="true"></span><span class="label">${label}</span>
        ${this.state === ConnectionState.reconnecting && this.retry ? html`<span class="label-long">${this.retry}</span>` : nothing}
      </span>
      ${this.userName ? html`<span class="user">${this.userName}</span>` : nothing}
      ${this.state !== ConnectionState.signedOut
        ? html`<button type="button" class="keys" aria-haspopup="dialog" @click=${() => this.emit('open-keys')}>API keys</button>
            <button type="button" class="sign-out" @click=${() => this.emit('sign-out')}>Sign out</button>`
        : nothing}
    </header>`;
  }

  private emit(type: string): void {
    this.dispatchEvent(new CustomEvent(type, { bubbles: true, composed: true }));
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'chat-header': ChatHeader;
  }
}
