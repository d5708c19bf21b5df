import { css, html, LitElement, nothing, type PropertyValues } from 'lit';
import { customElement, property, query, state } from 'lit/decorators.js';
import { repeat } from 'lit/directives/repeat.js';
import { API_KEY_NAME_MAX_LENGTH, type ApiKeyInfo, type CreateApiKeyResponse } from '../../../shared/protocol.js';
import { ApiError } from '../api/ApiError.js';
import type { ApiKeysApi } from '../api/ApiKeysApi.js';
import { copyText } from '../util/copyText.js';
import { visuallyHidden } from './sharedStyles.js';

/** Where the panel is: the list (with the form), or a new key shown for copying. */
const View = { list: 'list', created: 'created' } as const;
type View = (typeof View)[keyof typeof View];

/**
 * The "API keys" panel, a modal dialog: the user's keys (name, prefix, created, last used),
 * a form to make one, and revocation after a confirmation. A new key is shown once, with a copy
 * button and a note to copy it now; it lives only in this element's state until the user is done
 * or the dialog closes, and is never stored.
 *
 * Events (bubble, composed): `close-keys` when the dialog closed (Close, Escape).
 */
@customElement('chat-keys')
export class ChatKeys extends LitElement {
  @property({ attribute: false }) api: ApiKeysApi | undefined;
  @property({ type: Boolean, reflect: true }) open = false;

  @state() private view: View = View.list;
  @state() private keys: readonly ApiKeyInfo[] = [];
  @state() private loaded = false;
  @state() private busy = false;
  @state() private created: CreateApiKeyResponse | undefined;
  @state() private copied = false;
  @state() private confirming: string | undefined;
  @state() private error: string | undefined;
  @state() private status = '';
  @query('dialog') private dialog!: HTMLDialogElement;

  static override styles = [
    visuallyHidden,
    css`
      dialog {
        width: min(38rem, calc(100% - 2rem));
        max-height: calc(100% - 2rem);
        box-sizing: border-box;
        padding: 1.25rem;
        border: 1px solid var(--border);
        border-radius: 1rem;
        background: var(--surface);
        color: var(--text);
      }
      dialog::backdrop {
        background: rgb(0 0 0 / 0.4);
      }
      .top {
        display: flex;
        align-items: center;
        gap: 0.75rem;
      }
      h2 {
        flex: 1;
        margin: 0;
        font-size: 1.2rem;
      }
      h3 {
        margin: 1.1rem 0 0.5rem;
        font-size: 1rem;
      }
      p {
        margin: 0.6rem 0;
        font-size: 0.9rem;
      }
      .muted {
        color: var(--muted);
      }
      code {
        font-family: var(--mono);
        font-size: 0.85em;
        overflow-wrap: anywhere;
      }
      button {
        font: inherit;
        font-size: 0.85rem;
        color: var(--text);
        background: none;
        border: 1px solid var(--border);
        border-radius: 0.5rem;
        padding: 0.35rem 0.7rem;
        cursor: pointer;
        min-height: 2.25rem;
      }
      button.primary {
        font-weight: 600;
        border-color: var(--accent);
        background: var(--accent);
        color: var(--accent-text);
      }
      button.danger {
        color: var(--danger);
        border-color: currentColor;
      }
      button:disabled {
        opacity: 0.6;
        cursor: default;
      }
      input {
        font: inherit;
        color: var(--text);
        background: var(--bg);
        border: 1px solid var(--border);
        border-radius: 0.5rem;
        padding: 0.45rem 0.6rem;
        min-width: 0;
      }
      button:focus-visible,
      input:focus-visible {
        outline: 2px solid var(--focus);
        outline-offset: 1px;
      }
      form {
        margin-top: 0.9rem;
        display: flex;
        flex-wrap: wrap;
        align-items: flex-end;
        gap: 0.5rem;
      }
      form label {
        flex: 1 1 14rem;
        display: flex;
        flex-direction: column;
        gap: 0.25rem;
        font-size: 0.85rem;
        font-weight: 600;
      }
      .new-key {
        margin-top: 0.75rem;
        padding: 0.75rem;
        border-radius: 0.75rem;
        background: var(--warning-bg);
      }
      .new-key h3 {
        margin-top: 0;
      }
      .key-row {
        display: flex;
        gap: 0.5rem;
      }
      .key-row input {
        flex: 1;
        font-family: var(--mono);
        font-size: 0.85rem;
      }
      .new-key .done {
        margin-top: 0.6rem;
      }
      ul {
        list-style: none;
        margin: 0;
        padding: 0;
      }
      li {
        display: flex;
        flex-wrap: wrap;
        align-items: center;
        gap: 0.5rem;
        padding: 0.55rem 0;
        border-top: 1px solid var(--border);
      }
      .info {
        flex: 1 1 16rem;
        min-width: 0;
        display: flex;
        flex-direction: column;
        gap: 0.15rem;
      }
      .name {
        font-weight: 600;
        overflow-wrap: anywhere;
      }
      .meta {
        font-size: 0.8rem;
        color: var(--muted);
      }
      .confirm {
        flex-basis: 100%;
        display: flex;
        flex-wrap: wrap;
        align-items: center;
        gap: 0.5rem;
        font-size: 0.85rem;
      }
      .confirm span {
        flex: 1 1 14rem;
      }
      .error {
        color: var(--danger);
        font-weight: 500;
      }
      /* The plain-http copy fallback's buffer (copyText), off screen; the page's own rule does not reach in here. */
      .parley-copy-buffer {
        position: fixed;
        top: 0;
        left: -9999px;
        width: 1px;
        height: 1px;
        opacity: 0;
      }
    `,
  ];

  protected override updated(changed: PropertyValues): void {
    if (changed.has('open')) {
      if (this.open && !this.dialog.open) {
        this.dialog.showModal();
        this.renderRoot.querySelector<HTMLInputElement>('input[name=name]')?.focus();
        void this.load();
      } else if (!this.open && this.dialog.open) {
        this.dialog.close();
      }
    }
    // The pressed button is gone: the focus moves to the safe choice, and back after.
    if (changed.has('confirming') && changed.get('confirming') !== undefined && this.confirming === undefined) {
      const prefix = changed.get('confirming') as string;
      (this.renderRoot.querySelector<HTMLButtonElement>(`li[data-prefix="${prefix}"] button.revoke`) ?? this.renderRoot.querySelector<HTMLInputElement>('input[name=name]'))?.focus();
    } else if (changed.has('confirming') && this.confirming !== undefined) {
      this.renderRoot.querySelector<HTMLButtonElement>('button.keep')?.focus();
    }
    if (changed.has('view')) {
      if (this.view === View.created) this.renderRoot.querySelector<HTMLInputElement>('input.key-value')?.focus();
      else if (changed.get('view') === View.created) this.renderRoot.querySelector<HTMLInputElement>('input[name=name]')?.focus();
    }
  }

  protected override render() {
    return html`<dialog aria-labelledby="keys-title" @close=${this.onClose} @keydown=${this.onKeydown}>
      <div class="top">
        <h2 id="keys-title">API keys</h2>
        <button type="button" class="close" @click=${() => this.dialog.close()}>Close</button>
      </div>
      <p class="muted">
        Tools that speak the OpenAI API (editors, agents, the <code>openai</code> SDKs) can use Parley with a key: base URL
        <code>${location.origin}/v1</code>. A key acts as you and uses your limits. Signing out revokes all your keys.
      </p>
      ${this.error ? html`<p class="error" role="alert">${this.error}</p>` : nothing}
      ${this.view === View.created && this.created ? this.renderCreated(this.created) : this.renderForm()}
      <h3 id="keys-list-title">Your keys</h3>
      ${this.renderList()}
      <div class="visually-hidden" role="status" aria-live="polite">${this.status}</div>
    </dialog>`;
  }

  private renderForm() {
    return html`<form class="create" @submit=${this.onCreate}>
      <label
        >Name of a new key
        <input name="name" maxlength=${API_KEY_NAME_MAX_LENGTH} required autocomplete="off" spellcheck="false" placeholder="e.g. laptop editor" />
      </label>
      <button type="submit" class="primary" ?disabled=${this.busy}>${this.busy ? 'Creating…' : 'Create key'}</button>
    </form>`;
  }

  private renderCreated(created: CreateApiKeyResponse) {
    return html`<section class="new-key" aria-labelledby="new-key-title">
      <h3 id="new-key-title">Copy your new key now</h3>
      <p>This is the only time Parley shows the key “${created.name}”: it keeps only a hash of it. If you lose it, revoke it and create another.</p>
      <div class="key-row">
        <input class="key-value" readonly aria-label="Your new API key" aria-describedby="new-key-title" spellcheck="false" .value=${created.key} @focus=${(event: FocusEvent) => (event.target as HTMLInputElement).select()} />
        <button type="button" class="copy" @click=${this.onCopy}>${this.copied ? 'Copied' : 'Copy'}</button>
      </div>
      <button type="button" class="done primary" @click=${this.onDone}>I have copied it</button>
    </section>`;
  }

  private renderList() {
    if (!this.loaded) return html`<p class="muted">Loading…</p>`;
    if (this.keys.length === 0) return html`<p class="muted none">No keys yet.</p>`;
    return html`<ul aria-labelledby="keys-list-title">
      ${repeat(
        this.keys,
        (key) => key.prefix,
        (key) => this.renderKey(key),
      )}
    </ul>`;
  }

  private renderKey(key: ApiKeyInfo) {
    return html`<li data-prefix=${key.prefix}>
      <div class="info">
        <span class="name">${key.name}</span>
        <code>pk-parley-${key.prefix}…</code>
        <span class="meta">Created ${formatTime(key.createdAt)} · ${key.lastUsedAt === undefined ? 'Never used' : `Last used ${formatTime(key.lastUsedAt)}`}</span>
      </div>
      ${this.confirming === key.prefix
        ? html`<div class="confirm" role="group" aria-labelledby="confirm-${key.prefix}">
            <span id="confirm-${key.prefix}">Revoke “${key.name}”? Tools using it stop working at once.</span>
            <button type="button" class="danger confirm-revoke" ?disabled=${this.busy} @click=${() => this.revoke(key)}>Revoke</button>
            <button type="button" class="keep" @click=${() => (this.confirming = undefined)}>Keep</button>
          </div>`
        : html`<button type="button" class="revoke" aria-label="Revoke ${key.name}" @click=${() => (this.confirming = key.prefix)}>Revoke…</button>`}
    </li>`;
  }

  private async load(): Promise<void> {
    if (!this.api) return;
    try {
      this.keys = await this.api.list();
      this.error = undefined;
    } catch (error) {
      this.error = messageOf(error);
    } finally {
      this.loaded = true;
    }
  }

  private readonly onCreate = async (event: SubmitEvent): Promise<void> => {
    event.preventDefault();
    const input = (event.currentTarget as HTMLFormElement).querySelector('input');
    const name = input?.value.trim() ?? '';
    if (!name || !this.api || this.busy) return;
    this.busy = true;
    try {
      this.created = await this.api.create(name);
      this.copied = false;
      this.error = undefined;
      this.view = View.created;
      this.status = `Key “${this.created.name}” created. Copy it now: it will not be shown again.`;
      await this.load();
    } catch (error) {
      this.error = messageOf(error);
    } finally {
      this.busy = false;
    }
  };

  private readonly onCopy = async (): Promise<void> => {
    if (!this.created) return;
    this.copied = await copyText(this.created.key, this.dialog);
    this.status = this.copied ? 'Copied.' : 'Could not copy: select the key and copy it by hand.';
  };

  /** Forgets the key: from here on, nothing in the page holds it. */
  private readonly onDone = (): void => {
    this.created = undefined;
    this.copied = false;
    this.view = View.list;
  };

  private async revoke(key: ApiKeyInfo): Promise<void> {
    if (!this.api) return;
    this.busy = true;
    try {
      await this.api.revoke(key.prefix);
      this.error = undefined;
      this.status = `Key “${key.name}” revoked.`;
    } catch (error) {
      this.error = messageOf(error);
    } finally {
      this.busy = false;
      this.confirming = undefined;
      await this.load();
    }
  }

  /** Escape closes the dialog (the browser does that); it must not also reach the page's own Escape (stopping a reply). */
  private readonly onKeydown = (event: KeyboardEvent): void => {
    if (event.key !== 'Escape') return;
    event.stopPropagation();
    if (this.confirming !== undefined) {
      event.preventDefault();
      this.confirming = undefined;
    }
  };

  private readonly onClose = (): void => {
    this.onDone();
    this.confirming = undefined;
    this.error = undefined;
    this.status = '';
    this.dispatchEvent(new CustomEvent('close-keys', { bubbles: true, composed: true }));
  };
}

function formatTime(ms: number): string {
  return new Date(ms).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

function messageOf(error: unknown): string {
  return error instanceof ApiError ? error.message : 'Something went wrong.';
}

declare global {
  interface HTMLElementTagNameMap {
    'chat-keys': ChatKeys;
  }
}
