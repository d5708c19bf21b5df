import { css, html, LitElement } from 'lit';
import { customElement, property, query, state } from 'lit/decorators.js';
import { visuallyHidden } from './sharedStyles.js';

/**
 * The message box. Enter sends, Shift+Enter starts a new line (and Enter while an input method
 * is composing does neither). While a reply runs, Send gives way to Stop.
 *
 * Events (bubble, composed): `send-message` with `detail.text`, `stop-reply`.
 */
@customElement('chat-composer')
export class ChatComposer extends LitElement {
  /** A reply is running in this conversation. */
  @property({ type: Boolean }) generating = false;
  /** The socket is ready. */
  @property({ type: Boolean }) connected = false;
  @property({ type: Number }) maxChars = 0;

  @state() private value = '';
  @query('textarea') private textarea!: HTMLTextAreaElement;

  static override styles = [
    visuallyHidden,
    css`
    :host {
      display: block;
    }
    form {
      display: flex;
      gap: 0.5rem;
      align-items: flex-end;
    }
    .field {
      flex: 1;
      display: flex;
      flex-direction: column;
      gap: 0.2rem;
      min-width: 0;
    }
    textarea {
      font: inherit;
      color: var(--text);
      background: var(--surface);
      border: 1px solid var(--border);
      border-radius: 0.75rem;
      padding: 0.6rem 0.75rem;
      resize: none;
      min-height: 2.75rem;
      max-height: 40vh;
      box-sizing: border-box;
      width: 100%;
    }
    textarea:focus-visible,
    button:focus-visible {
      outline: 2px solid var(--focus);
      outline-offset: 1px;
    }
    .hint {
      font-size: 0.72rem;
      color: var(--muted);
      min-height: 1em;
    }
    .hint.over {
      color: var(--danger);
    }
    @media (max-width: 760px) {
      .keys {
        visibility: hidden;
      }
    }
    button {
      font: inherit;
      font-weight: 600;
      border: none;
      border-radius: 0.75rem;
      padding: 0 1.1rem;
      height: 2.75rem;
      cursor: pointer;
      margin-bottom: 1.1rem;
    }
    .send {
      background: var(--accent);
      color: var(--accent-text);
    }
    .stop {
      background: var(--danger);
      color: #fff;
    }
    button:disabled {
      opacity: 0.45;
      cursor: not-allowed;
    }
  `,
  ];

  /** Focuses the text box (after switching conversations, for example). */
  override focus(): void {
    this.textarea?.focus();
  }

  protected override render() {
    const length = this.value.length;
    const over = this.maxChars > 0 && length > this.maxChars;
    const nearLimit = this.maxChars > 0 && length > this.maxChars * 0.8;
    const canSend = this.connected && !this.generating && this.value.trim().length > 0 && !over;
    const rows = Math.min(8, Math.max(1, this.value.split('\n').length));
    return html`
      <form @submit=${this.onSubmit}>
        <div class="field">
          <label for="message" class="visually-hidden">Message</label>
          <textarea
            id="message"
            rows=${rows}
            placeholder=${this.connected ? 'Message Parley' : 'Waiting for the connection…'}
            aria-describedby="hint"
            .value=${this.value}
            @input=${this.onInput}
            @keydown=${this.onKeydown}
          ></textarea>
          <span id="hint" class="hint ${over ? 'over' : ''}">
            ${nearLimit
              ? `${length.toLocaleString('en')} / ${this.maxChars.toLocaleString('en')} characters${over ? ': too long to send' : ''}`
              : html`<span class="keys">Enter sends · Shift+Enter for a new line${this.generating ? ' · Esc stops' : ''}</span>`}
          </span>
        </div>
        ${this.generating
          ? html`<button type="button" class="stop" @click=${this.onStop} title="Stop the reply (Esc)">Stop</button>`
          : html`<button type="submit" class="send" ?disabled=${!canSend}>Send</button>`}
      </form>
    `;
  }

  static override shadowRootOptions = { ...LitElement.shadowRootOptions, delegatesFocus: true };

  private onInput(event: InputEvent): void {
    this.value = (event.target as HTMLTextAreaElement).value;
  }

  private onKeydown(event: KeyboardEvent): void {
    if (event.key !== 'Enter' || event.shiftKey || event.isComposing || event.altKey || event.ctrlKey || event.metaKey) return;
    event.preventDefault();
    this.submit();
  }

  private onSubmit(event: SubmitEvent): void {
    event.preventDefault();
    this.submit();
  }

  private submit(): void {
    const text = this.value.trim();
    if (!text || !this.connected || this.generating) return;
    if (this.maxChars > 0 && text.length > this.maxChars) return;
    this.dispatchEvent(new CustomEvent('send-message', { detail: { text }, bubbles: true, composed: true }));
    this.value = '';
  }

  private async onStop(): Promise<void> {
    this.dispatchEvent(new CustomEvent('stop-reply', { bubbles: true, composed: true }));
    // The Stop button goes away with the reply: keep the focus in the composer, not on the page.
    await this.updateComplete;
    this.textarea?.focus();
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'chat-composer': ChatComposer;
  }
}
