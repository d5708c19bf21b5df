import { css, html, LitElement, nothing } from 'lit';
import { customElement, property, query, state } from 'lit/decorators.js';
import type { AttachedDocument } from '../../../shared/protocol.js';
import type { DocumentApi } from '../api/DocumentApi.js';
import { AttachmentsController } from '../controllers/AttachmentsController.js';
import { visuallyHidden } from './sharedStyles.js';
import './chat-attachments.js';

/**
 * The message box. Enter sends, Shift+Enter starts a new line (and Enter while an input method
 * is composing does neither). While a reply runs, Send gives way to Stop.
 *
 * Files (the attach button, or dropped here or on the chat: see `addFiles`) upload as soon as
 * they are attached, and go with the next message once the server has read them. Sending waits
 * until no file is still uploading or being read; a refused file is left out and never blocks.
 *
 * Events (bubble, composed): `send-message` with `detail.text` and `detail.documents`, `stop-reply`.
 */
@customElement('chat-composer')
export class ChatComposer extends LitElement {
  /** A reply is running in this conversation. */
  @property({ type: Boolean }) generating = false;
  /** The socket is ready. */
  @property({ type: Boolean }) connected = false;
  @property({ type: Number }) maxChars = 0;
  /** Where attached files go; without it, nothing can be attached. */
  @property({ attribute: false }) documentApi: DocumentApi | undefined;

  @state() private value = '';
  @query('textarea') private textarea!: HTMLTextAreaElement;
  @query('input[type=file]') private fileInput!: HTMLInputElement | null;
  private readonly attachments = new AttachmentsController(this, () => this.documentApi);

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
    .hint.waiting {
      color: var(--text);
    }
    .attach {
      flex: none;
      display: grid;
      place-items: center;
      width: 2.75rem;
      padding: 0;
      color: var(--muted);
      background: var(--surface);
      border: 1px solid var(--border);
    }
    .attach:hover:not(:disabled) {
      color: var(--text);
      border-color: var(--muted);
    }
    .attach svg {
      width: 1.25rem;
      height: 1.25rem;
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

  /** Attaches files (picked, or dropped here or on the chat) and starts their uploads. */
  addFiles(files: Iterable<File>): void {
    this.attachments.add(files);
  }

  /** Files can be attached here (the server takes documents). */
  get acceptsFiles(): boolean {
    return this.documentApi !== undefined;
  }

  protected override render() {
    const length = this.value.length;
    const over = this.maxChars > 0 && length > this.maxChars;
    const nearLimit = this.maxChars > 0 && length > this.maxChars * 0.8;
    const pending = this.attachments.pending;
    const canSend = this.connected && !this.generating && this.value.trim().length > 0 && !over && pending === 0;
    const rows = Math.min(8, Math.max(1, this.value.split('\n').length));
    return html`
      <chat-attachments .items=${this.attachments.list} @remove-attachment=${this.onRemoveAttachment}></chat-attachments>
      <span class="visually-hidden" role="status">${this.attachments.announcement}</span>
      <form @submit=${this.onSubmit}>
        ${this.acceptsFiles
          ? html`<input type="file" multiple hidden tabindex="-1" @change=${this.onFilesPicked} />
              <button type="button" class="attach" aria-label="Attach files" title="Attach files (text or PDF)" @click=${this.pickFiles}>
                <svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">
                  <path d="M21.44 11.05l-9.19 9.19a6 6 0 0 1-8.49-8.49l9.19-9.19a4 4 0 0 1 5.66 5.66l-9.2 9.19a2 2 0 0 1-2.83-2.83l8.49-8.48" />
                </svg>
              </button>`
          : nothing}
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
          <span id="hint" class="hint ${over ? 'over' : pending > 0 ? 'waiting' : ''}">
            ${nearLimit
              ? `${length.toLocaleString('en')} / ${this.maxChars.toLocaleString('en')} characters${over ? ': too long to send' : ''}`
              : pending > 0
                ? `Sending waits for ${pending === 1 ? 'a file' : `${pending} files`} to finish uploading.`
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
    if (this.attachments.pending > 0) return;
    const documents: AttachedDocument[] = this.attachments.take();
    this.dispatchEvent(new CustomEvent('send-message', { detail: { text, documents }, bubbles: true, composed: true }));
    this.value = '';
  }

  private pickFiles(): void {
    this.fileInput?.click();
  }

  private onFilesPicked(event: Event): void {
    const input = event.target as HTMLInputElement;
    if (input.files) this.addFiles([...input.files]);
    // The same file can be picked again after its chip was removed.
    input.value = '';
    this.textarea?.focus();
  }

  private async onRemoveAttachment(event: CustomEvent<{ key: string }>): Promise<void> {
    this.attachments.remove(event.detail.key);
    // The chip and its button are gone: the focus goes back to the message.
    await this.updateComplete;
    this.textarea?.focus();
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
