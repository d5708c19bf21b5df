import { css, html, LitElement, nothing } from 'lit';
import { customElement, query, state } from 'lit/decorators.js';
import type { AttachedDocument, ServerFrame } from '../../../shared/protocol.js';
import { ApiKeysApi } from '../api/ApiKeysApi.js';
import { ConversationApi, type ExportFormat } from '../api/ConversationApi.js';
import { DocumentApi } from '../api/DocumentApi.js';
import { AuthError } from '../auth/authApi.js';
import { RefreshResult, TokenBroker } from '../auth/TokenBroker.js';
import { ChatController } from '../controllers/ChatController.js';
import { ConnectionController, ConnectionState, NoticeTone } from '../controllers/ConnectionController.js';
import { ConversationSync } from '../controllers/ConversationSync.js';
import { FileDropController } from '../controllers/FileDropController.js';
import { chosenModel } from '../state/chosenModel.js';
import { ConversationStore } from '../state/ConversationStore.js';
import type { ChatComposer } from './chat-composer.js';
import { visuallyHidden } from './sharedStyles.js';
import './chat-composer.js';
import './chat-header.js';
import './chat-join.js';
import './chat-keys.js';
import './chat-model-picker.js';
import './chat-sidebar.js';
import './chat-thread.js';

const NAME_KEY = 'parley.v1.name';

/** Before the first refresh answers, the page shows neither the join form nor the chat. */
const Phase = { starting: 'starting', join: 'join', chat: 'chat' } as const;
type Phase = (typeof Phase)[keyof typeof Phase];

/**
 * The application: signs in (refresh cookie, else the join form with the invite from the
 * link's fragment), then shows the conversation list, the thread and the composer. The socket
 * lives in ConnectionController, requests and replies in ChatController, the cache of the
 * conversations in ConversationStore (localStorage), and keeping it in step with the server
 * (which has the conversations) in ConversationSync, over the socket and ConversationApi.
 */
@customElement('chat-app')
export class ChatApp extends LitElement {
  @state() private phase: Phase = Phase.starting;
  @state() private joinMessage: string | undefined;
  @state() private joining = false;
  @state() private sidebarOpen = false;
  @state() private keysOpen = false;
  @query('chat-composer') private composer: ChatComposer | null | undefined;
  @query('.announcer') private announcer!: HTMLElement;

  private readonly broker = new TokenBroker();
  private readonly store: ConversationStore = new ConversationStore((): boolean => this.chat.busy);
  private readonly connection = new ConnectionController(this, this.broker, {
    frame: (frame) => this.onFrame(frame),
    disconnected: (resumable) => this.chat.disconnected(resumable),
    signedOut: (reason) => this.showJoin(reason),
  });
  private readonly chat: ChatController = new ChatController(this, this.store, this.connection, (text) => this.announce(text));
  private readonly keysApi = new ApiKeysApi(this.broker);
  private readonly documentApi = new DocumentApi(this.broker);
  /** Files dropped anywhere on the chat (thread or composer) are attached to the message being written. */
  private readonly fileDrop = new FileDropController(
    this,
    () => this.phase === Phase.chat && this.composer?.acceptsFiles === true,
    (files) => this.composer?.addFiles(files),
  );
  private readonly sync = new ConversationSync(this, this.store, this.connection, this.chat, new ConversationApi(this.broker), (text) => this.announce(text));
  /** Kept in memory only, to fill the form again if the session ends. */
  private invite = '';
  private ticker: ReturnType<typeof setInterval> | undefined;

  static override styles = [
    visuallyHidden,
    css`
      :host {
        display: flex;
        flex-direction: column;
        height: 100vh;
        height: 100dvh;
        color: var(--text);
        background: var(--bg);
      }
      .notice,
      .sync-notice {
        padding: 0.45rem 0.9rem;
        font-size: 0.85rem;
        border-bottom: 1px solid var(--border);
      }
      .info {
        background: var(--info-bg);
      }
      .warning {
        background: var(--warning-bg);
      }
      .error {
        background: var(--danger-bg);
      }
      .sync-notice {
        display: flex;
        align-items: center;
        gap: 0.75rem;
      }
      .sync-notice span {
        flex: 1;
      }
      .dismiss {
        font: inherit;
        font-size: 0.8rem;
        color: var(--text);
        background: none;
        border: 1px solid var(--border);
        border-radius: 0.5rem;
        padding: 0.2rem 0.6rem;
        cursor: pointer;
        min-height: 2rem;
      }
      .dismiss:focus-visible {
        outline: 2px solid var(--focus);
        outline-offset: 1px;
      }
      .layout {
        flex: 1;
        display: flex;
        min-height: 0;
        position: relative;
      }
      aside {
        width: 17rem;
        flex: none;
        border-right: 1px solid var(--border);
        background: var(--sidebar);
        display: flex;
        flex-direction: column;
        min-height: 0;
      }
      chat-sidebar {
        flex: 1;
      }
      main {
        flex: 1;
        min-width: 0;
        display: flex;
        flex-direction: column;
        position: relative;
      }
      .drop-zone {
        position: absolute;
        inset: 0.5rem;
        z-index: 1;
        display: grid;
        place-items: center;
        border: 2px dashed var(--accent);
        border-radius: 1rem;
        background: color-mix(in srgb, var(--info-bg) 88%, transparent);
        color: var(--text);
        font-weight: 600;
        text-align: center;
        padding: 1rem;
        pointer-events: none;
      }
      .demo-banner {
        margin: 0.75rem auto 0;
        max-width: 46rem;
        width: calc(100% - 2rem);
        box-sizing: border-box;
        padding: 0.5rem 0.75rem;
        border-radius: 0.6rem;
        font-size: 0.85rem;
        background: var(--warning-bg);
      }
      chat-thread {
        flex: 1;
      }
      chat-composer,
      chat-model-picker {
        width: 100%;
        max-width: 48rem;
        margin: 0 auto;
        padding: 0.5rem 1rem 0;
        box-sizing: border-box;
      }
      chat-model-picker {
        padding-bottom: 0;
      }
      .starting {
        margin: 20vh auto;
        color: var(--muted);
      }
      .scrim {
        display: none;
      }
      @media (max-width: 760px) {
        aside {
          position: absolute;
          inset: 0 auto 0 0;
          width: min(20rem, 85vw);
          z-index: 2;
          transform: translateX(-100%);
          visibility: hidden;
          transition:
            transform 0.2s ease,
            visibility 0.2s;
          box-shadow: 0 0 2rem rgb(0 0 0 / 0.3);
        }
        aside.open {
          transform: none;
          visibility: visible;
        }
        .scrim.open {
          display: block;
          position: absolute;
          inset: 0;
          z-index: 1;
          background: rgb(0 0 0 / 0.35);
          border: none;
        }
        chat-composer,
        chat-model-picker {
          padding: 0.4rem 0.6rem 0;
        }
      }
      @media (prefers-reduced-motion: reduce) {
        aside {
          transition: none;
        }
      }
    `,
  ];

  override connectedCallback(): void {
    super.connectedCallback();
    this.store.addEventListener('change', this.onStoreChange);
    document.addEventListener('keydown', this.onKeydown);
    window.addEventListener('pagehide', this.onPageHide);
    void this.boot();
  }

  override disconnectedCallback(): void {
    super.disconnectedCallback();
    this.store.removeEventListener('change', this.onStoreChange);
    document.removeEventListener('keydown', this.onKeydown);
    window.removeEventListener('pagehide', this.onPageHide);
    clearInterval(this.ticker);
  }

  /** Reads the invite from the link (and removes it from the address bar), then tries the refresh cookie. */
  private async boot(): Promise<void> {
    const invite = new URLSearchParams(location.hash.slice(1)).get('invite');
    if (invite) {
      this.invite = invite;
      history.replaceState(null, '', location.pathname + location.search);
    }
    const result = await this.broker.refresh();
    if (result === RefreshResult.ok) {
      this.phase = Phase.chat;
      this.connection.start();
      return;
    }
    this.showJoin(result === RefreshResult.failed ? 'Cannot reach the Parley server right now.' : undefined);
  }

  protected override updated(): void {
    // A once-a-second tick keeps "reconnecting in N s" true.
    const reconnecting = this.connection.state === ConnectionState.reconnecting;
    if (reconnecting && this.ticker === undefined) this.ticker = setInterval(() => this.requestUpdate(), 1000);
    if (!reconnecting && this.ticker !== undefined) {
      clearInterval(this.ticker);
      this.ticker = undefined;
    }
  }

  protected override render() {
    const { connection } = this;
    const ready = connection.ready;
    return html`
      <chat-header
        .state=${connection.state}
        .retry=${connection.describeRetry()}
        .model=${chosenModel(this.store.current, ready)}
        .userName=${ready?.user.name}
        .sidebarOpen=${this.sidebarOpen}
        @toggle-sidebar=${this.toggleSidebar}
        @open-keys=${() => (this.keysOpen = true)}
        @sign-out=${this.signOut}
      ></chat-header>
      ${connection.notice && this.phase === Phase.chat ? html`<div class="notice ${connection.notice.tone}" role="status">${connection.notice.text}</div>` : nothing}
      ${this.sync.notice && this.phase === Phase.chat
        ? html`<div class="sync-notice ${this.sync.notice.tone}" role=${this.sync.notice.tone === NoticeTone.error ? 'alert' : 'status'}>
            <span>${this.sync.notice.text}</span>
            <button type="button" class="dismiss" aria-label="Dismiss this message" @click=${() => this.sync.dismiss()}>Dismiss</button>
          </div>`
        : nothing}
      ${this.phase === Phase.starting ? html`<p class="starting">Signing in…</p>` : nothing}
      ${this.phase === Phase.join
        ? html`<chat-join .name=${readName()} .invite=${this.invite} .message=${this.joinMessage} ?busy=${this.joining} @join=${this.onJoin}></chat-join>`
        : nothing}
      ${this.phase === Phase.chat ? this.renderChat() : nothing}
      ${this.phase === Phase.chat ? html`<chat-keys .api=${this.keysApi} ?open=${this.keysOpen} @close-keys=${() => (this.keysOpen = false)}></chat-keys>` : nothing}
      <div class="announcer visually-hidden" aria-live="polite" aria-atomic="true"></div>
    `;
  }

  private renderChat() {
    const current = this.store.current;
    const ready = this.connection.ready;
    const generating = new Set(this.store.list.filter((conversation) => this.chat.isGenerating(conversation.id)).map((conversation) => conversation.id));
    const currentGenerating = current !== undefined && generating.has(current.id);
    const model = chosenModel(current, ready);
    const severalModels = (ready?.models.length ?? 0) > 1;
    return html`<div class="layout">
      <button type="button" class="scrim ${this.sidebarOpen ? 'open' : ''}" tabindex="-1" aria-hidden="true" @click=${() => (this.sidebarOpen = false)}></button>
      <aside id="sidebar" class=${this.sidebarOpen ? 'open' : ''} aria-label="Conversations">
        <chat-sidebar
          .conversations=${this.store.list}
          .currentId=${current?.id}
          .generating=${generating}
          @new-conversation=${this.onNew}
          @select-conversation=${this.onSelect}
          @rename-conversation=${(event: CustomEvent<{ id: string; title: string }>) => void this.sync.rename(event.detail.id, event.detail.title)}
          @delete-conversation=${(event: CustomEvent<{ id: string }>) => void this.sync.remove(event.detail.id)}
          @export-conversation=${(event: CustomEvent<{ id: string; format: ExportFormat }>) => void this.sync.export(event.detail.format, event.detail.id)}
          @export-all=${(event: CustomEvent<{ format: ExportFormat }>) => void this.sync.export(event.detail.format)}
          @delete-all=${() => void this.sync.removeAll()}
        ></chat-sidebar>
      </aside>
      <main @dragenter=${this.fileDrop.dragenter} @dragover=${this.fileDrop.dragover} @dragleave=${this.fileDrop.dragleave} @drop=${this.fileDrop.drop}>
        ${this.fileDrop.active ? html`<div class="drop-zone" role="status">Drop files to attach them to your message</div>` : nothing}
        ${model?.demo
          ? html`<p class="demo-banner">
              This is <strong>Parley's demo model</strong>: a toy that strings words together. It is not an assistant.
              ${severalModels ? 'Pick another model below to chat with a real one.' : html`Start Parley with <code>--model</code> to chat with a real one.`}
            </p>`
          : nothing}
        <chat-thread
          .messages=${current?.messages ?? []}
          .conversationId=${current?.id}
          .model=${model}
          .streamFor=${(id: string) => this.chat.streamFor(id)}
          ?generating=${currentGenerating}
          ?connected=${this.connection.connected}
          ?loading=${current?.unfetched === true}
          .loadError=${this.sync.loadError(current?.id)}
          @regenerate=${() => this.chat.regenerate()}
          @retry-load=${() => this.sync.retry()}
        ></chat-thread>
        ${severalModels
          ? html`<chat-model-picker
              .models=${ready?.models ?? []}
              .value=${model?.id}
              ?disabled=${current?.unfetched === true}
              @pick-model=${this.onPickModel}
            ></chat-model-picker>`
          : nothing}
        <chat-composer
          ?generating=${currentGenerating}
          ?connected=${this.connection.connected && current?.unfetched !== true}
          .maxChars=${ready?.limits.maxTextChars ?? 0}
          .documentApi=${this.documentApi}
          @send-message=${(event: CustomEvent<{ text: string; documents: AttachedDocument[] }>) => this.chat.send(event.detail.text, event.detail.documents)}
          @stop-reply=${() => this.chat.stop()}
        ></chat-composer>
      </main>
    </div>`;
  }

  private onFrame(frame: ServerFrame): void {
    if (frame.type === 'ready') {
      this.store.load(frame.user.id);
      this.phase = Phase.chat;
    }
    this.chat.handle(frame);
    this.sync.handle(frame);
  }

  private async onJoin(event: CustomEvent<{ name: string; invite: string }>): Promise<void> {
    const { name, invite } = event.detail;
    this.joining = true;
    this.joinMessage = undefined;
    try {
      await this.broker.join(invite, name);
      this.invite = invite;
      try {
        localStorage.setItem(NAME_KEY, name);
      } catch {
        // Only a convenience.
      }
      this.phase = Phase.chat;
      this.connection.start();
      await this.updateComplete;
      this.composer?.focus();
    } catch (error) {
      this.joinMessage = error instanceof AuthError ? (error.status === 401 ? 'That invite code is not right.' : error.message) : 'Joining failed.';
    } finally {
      this.joining = false;
    }
  }

  private showJoin(reason: string | undefined): void {
    this.phase = Phase.join;
    this.keysOpen = false;
    this.joinMessage = reason;
    this.sidebarOpen = false;
  }

  private readonly signOut = async (): Promise<void> => {
    this.sync.dismiss();
    this.store.forgetUser();
    this.connection.signOut();
    await this.broker.signOut();
    this.showJoin(undefined);
  };

  private readonly onNew = async (): Promise<void> => {
    const current = this.store.current;
    // An untouched new conversation is reused rather than piling up empty ones.
    if (!current || current.messages.length > 0 || current.unfetched) this.store.create();
    this.sidebarOpen = false;
    await this.updateComplete;
    this.composer?.focus();
  };

  private readonly onSelect = async (event: CustomEvent<{ id: string }>): Promise<void> => {
    this.sync.open(event.detail.id);
    this.sidebarOpen = false;
    await this.updateComplete;
    this.composer?.focus();
  };

  /** A model picked for the open conversation (a new one if none is open): its next message names it. */
  private readonly onPickModel = (event: CustomEvent<{ model: string }>): void => {
    const conversation = this.store.current ?? this.store.create();
    this.store.pickModel(conversation, event.detail.model);
  };

  private readonly onStoreChange = (): void => this.requestUpdate();

  /** The drawer on narrow screens: opening it moves the focus into it. */
  private readonly toggleSidebar = async (): Promise<void> => {
    this.sidebarOpen = !this.sidebarOpen;
    if (!this.sidebarOpen) return;
    await this.updateComplete;
    this.renderRoot.querySelector('chat-sidebar')?.focus();
  };

  private readonly onKeydown = (event: KeyboardEvent): void => {
    if (event.key !== 'Escape' || event.defaultPrevented) return;
    if (this.sidebarOpen) {
      this.sidebarOpen = false;
      return;
    }
    const current = this.store.current;
    if (current && this.chat.isGenerating(current.id)) {
      event.preventDefault();
      this.chat.stop();
    }
  };

  private readonly onPageHide = (): void => this.store.saveNow();

  /** Polite announcement of a finished reply; cleared first so the same text is read again. */
  private announce(text: string): void {
    const region = this.announcer;
    if (!region) return;
    region.textContent = '';
    setTimeout(() => (region.textContent = text), 50);
  }
}

function readName(): string {
  try {
    return localStorage.getItem(NAME_KEY) ?? '';
  } catch {
    return '';
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'chat-app': ChatApp;
  }
}
