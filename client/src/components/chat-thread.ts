import { css, html, LitElement, nothing, type PropertyValues } from 'lit';
import { customElement, property, query } from 'lit/decorators.js';
import { repeat } from 'lit/directives/repeat.js';
import type { ModelInfo } from '../../../shared/protocol.js';
import { Sender, type ChatMessage } from '../state/ChatMessage.js';
import type { ReplyStream } from '../state/ReplyStream.js';
import './chat-message.js';

/**
 * The messages of one conversation, in a scroll container that sticks to the bottom while the
 * reader is there (a reader who scrolled up to read is left alone).
 *
 * Events (bubble, composed): `regenerate` (from a message), `retry-load`.
 */
@customElement('chat-thread')
export class ChatThread extends LitElement {
  @property({ attribute: false }) messages: readonly ChatMessage[] = [];
  @property({ attribute: false }) model: ModelInfo | undefined;
  /** Finds the live stream of a running reply. */
  @property({ attribute: false }) streamFor: (messageId: string) => ReplyStream | undefined = () => undefined;
  /** The conversation is generating (no regenerate button meanwhile). */
  @property({ type: Boolean }) generating = false;
  @property({ type: Boolean }) connected = false;
  /** The conversation's messages are still on their way from the server. */
  @property({ type: Boolean }) loading = false;
  /** Why the conversation's messages could not be loaded, if they could not. */
  @property() loadError: string | undefined;
  /** Identifies the conversation shown: switching jumps to its end. */
  @property() conversationId: string | undefined;

  @query('.scroller') private scroller!: HTMLElement;
  @query('.list') private list!: HTMLElement;
  private stuck = true;
  private resizeObserver: ResizeObserver | undefined;

  static override styles = css`
    :host {
      display: block;
      min-height: 0;
    }
    .scroller {
      height: 100%;
      overflow-y: auto;
      overscroll-behavior: contain;
    }
    .list {
      display: flex;
      flex-direction: column;
      gap: 0.9rem;
      padding: 1rem;
      max-width: 48rem;
      margin: 0 auto;
      box-sizing: border-box;
    }
    .empty {
      margin: 15vh auto 0;
      max-width: 30rem;
      padding: 0 1rem;
      text-align: center;
      color: var(--muted);
    }
    .retry {
      font: inherit;
      font-size: 0.85rem;
      color: var(--text);
      background: var(--surface);
      border: 1px solid var(--border);
      border-radius: 0.5rem;
      padding: 0.3rem 0.75rem;
      cursor: pointer;
      min-height: 2.25rem;
    }
    .retry:focus-visible {
      outline: 2px solid var(--focus);
      outline-offset: 1px;
    }
    .empty h2 {
      color: var(--text);
      font-size: 1.25rem;
      margin: 0 0 0.5rem;
    }
  `;

  override connectedCallback(): void {
    super.connectedCallback();
    this.resizeObserver = new ResizeObserver(() => this.keepAtBottom());
  }

  override disconnectedCallback(): void {
    super.disconnectedCallback();
    this.resizeObserver?.disconnect();
  }

  protected override firstUpdated(): void {
    if (this.list) this.resizeObserver?.observe(this.list);
  }

  protected override updated(changed: PropertyValues<this>): void {
    if (changed.has('conversationId')) {
      this.stuck = true;
      this.keepAtBottom();
    }
  }

  protected override render() {
    const lastAssistant = this.messages.at(-1)?.from === Sender.assistant ? this.messages.at(-1)?.id : undefined;
    return html`
      <div class="scroller" @scroll=${this.onScroll}>
        <section class="list" aria-label="Messages">
          ${this.messages.length === 0 && this.loading
            ? html`<div class="empty loading" role="status">
                ${this.loadError
                  ? html`<p>This conversation could not be loaded: ${this.loadError}</p>
                      <button type="button" class="retry" @click=${this.retryLoad}>Try again</button>`
                  : html`<p>${this.connected ? 'Loading this conversation from the server…' : 'This conversation is on the server: it loads once the connection is back.'}</p>`}
              </div>`
            : nothing}
          ${this.messages.length === 0 && !this.loading
            ? html`<div class="empty">
                <h2>Start a conversation</h2>
                <p>
                  ${this.model
                    ? this.model.demo
                      ? "You are talking to Parley's demo model. It strings plausible words together and is not an assistant."
                      : `Ask ${this.model.name} anything. Replies stay on this network.`
                    : nothing}
                </p>
              </div>`
            : nothing}
          ${repeat(
            this.messages,
            (message) => message.id,
            (message) => html`<chat-message
              data-id=${message.id}
              .from=${message.from}
              .text=${message.text}
              .status=${message.status}
              .queuePosition=${message.queuePosition}
              .stats=${message.stats}
              .error=${message.error}
              .notice=${message.notice}
              .documents=${message.documents}
              .sources=${message.sources}
              .stream=${this.streamFor(message.id)}
              ?regenerable=${message.id === lastAssistant && !this.generating && this.connected}
            ></chat-message>`,
          )}
        </section>
      </div>
    `;
  }

  private retryLoad(): void {
    this.dispatchEvent(new CustomEvent('retry-load', { bubbles: true, composed: true }));
  }

  private onScroll(): void {
    const { scrollTop, scrollHeight, clientHeight } = this.scroller;
    this.stuck = scrollHeight - scrollTop - clientHeight < 48;
  }

  private keepAtBottom(): void {
    if (this.stuck && this.scroller) this.scroller.scrollTop = this.scroller.scrollHeight;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'chat-thread': ChatThread;
  }
}
