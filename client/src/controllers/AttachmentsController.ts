import type { ReactiveController, ReactiveControllerHost } from 'lit';
import type { AttachedDocument, DocumentInfo } from '../../../shared/protocol.js';
import { ApiError } from '../api/ApiError.js';
import type { DocumentApi } from '../api/DocumentApi.js';
import { newId } from '../util/newId.js';

/** Where an attached file is. Uploads start at `uploading` and end in `ready` or `refused`. */
export const AttachmentPhase = {
  /** The file's bytes are on their way to the server. */
  uploading: 'uploading',
  /** Every byte arrived; the server is extracting the text. */
  reading: 'reading',
  /** The server keeps the document: it goes with the next message. */
  ready: 'ready',
  /** Refused (by the server, or by the per-message limit here): never sent, never blocks sending. */
  refused: 'refused',
} as const;
export type AttachmentPhase = (typeof AttachmentPhase)[keyof typeof AttachmentPhase];

/** A file in the composer, as the chips show it. */
export interface Attachment {
  /** This page's key for the chip (the server's id is `document.id`, once ready). */
  readonly key: string;
  readonly name: string;
  readonly size: number;
  readonly phase: AttachmentPhase;
  /** While uploading: bytes sent so far. */
  readonly sent: number;
  /** Why it was refused, in the server's words. */
  readonly error?: string;
  readonly document?: DocumentInfo;
}

/** The most files one message takes. The server decides too (and may allow fewer). */
export const MAX_FILES_PER_MESSAGE = 5;

interface Entry {
  attachment: Attachment;
  readonly abort: AbortController;
}

/**
 * The files attached to the message being written. Each upload starts as soon as it is
 * attached; a removed chip cancels its upload, or deletes the server's copy if it was ready.
 * `take` hands the ready documents to a message being sent and clears the chips. Uploads in
 * flight are cancelled when the host leaves the page.
 */
export class AttachmentsController implements ReactiveController {
  private entries: Entry[] = [];
  /** The last change worth saying out loud (a file ready or refused), for a live region. */
  announcement = '';

  constructor(
    private readonly host: ReactiveControllerHost,
    private readonly api: () => DocumentApi | undefined,
  ) {
    host.addController(this);
  }

  hostDisconnected(): void {
    for (const entry of this.entries) entry.abort.abort();
    this.entries = [];
  }

  get list(): readonly Attachment[] {
    return this.entries.map((entry) => entry.attachment);
  }

  /** Files still uploading or being read: a message waits for them. */
  get pending(): number {
    return this.entries.filter(({ attachment }) => attachment.phase === AttachmentPhase.uploading || attachment.phase === AttachmentPhase.reading).length;
  }

  get ready(): number {
    return this.entries.filter(({ attachment }) => attachment.phase === AttachmentPhase.ready).length;
  }

  /** Attaches files and starts their uploads; past the per-message limit, a file is refused here. */
  add(files: Iterable<File>): void {
    const api = this.api();
    if (!api) return;
    for (const file of files) {
      const counted = this.entries.filter(({ attachment }) => attachment.phase !== AttachmentPhase.refused).length;
      const entry: Entry = {
        attachment: { key: newId('f'), name: file.name || 'file', size: file.size, phase: AttachmentPhase.uploading, sent: 0 },
        abort: new AbortController(),
      };
      this.entries.push(entry);
      if (counted >= MAX_FILES_PER_MESSAGE) {
        this.update(entry, { phase: AttachmentPhase.refused, error: `A message takes at most ${MAX_FILES_PER_MESSAGE} files.` });
        continue;
      }
      void this.upload(api, file, entry);
    }
    this.host.requestUpdate();
  }

  /** Removes a chip: cancels its upload, or deletes the server's copy of a ready document. */
  remove(key: string): void {
    const entry = this.entries.find(({ attachment }) => attachment.key === key);
    if (!entry) return;
    this.entries = this.entries.filter((other) => other !== entry);
    entry.abort.abort();
    const id = entry.attachment.document?.id;
    // Best effort: an unsent upload the server keeps is forgotten in time anyway.
    if (id !== undefined) this.api()?.remove(id).catch(() => undefined);
    this.announcement = `${entry.attachment.name} removed.`;
    this.host.requestUpdate();
  }

  /** The ready documents, for the message being sent; every chip goes (refused ones too). */
  take(): AttachedDocument[] {
    const documents = this.entries.flatMap(({ attachment: { document } }) => (document ? [{ id: document.id, name: document.name, size: document.size, kind: document.kind }] : []));
    this.entries = [];
    this.host.requestUpdate();
    return documents;
  }

  private async upload(api: DocumentApi, file: File, entry: Entry): Promise<void> {
    try {
      const document = await api.upload(
        file,
        entry.attachment.name,
        (progress) => {
          if (progress.phase === 'reading') this.update(entry, { phase: AttachmentPhase.reading });
          else if (entry.attachment.phase === AttachmentPhase.uploading) this.update(entry, { sent: progress.sent });
        },
        entry.abort.signal,
      );
      this.update(entry, { phase: AttachmentPhase.ready, document });
      this.announcement = `${entry.attachment.name} is attached.`;
    } catch (error) {
      if (entry.abort.signal.aborted) return;
      const reason = error instanceof ApiError ? error.message : 'The upload failed.';
      this.update(entry, { phase: AttachmentPhase.refused, error: reason });
      this.announcement = `${entry.attachment.name} was not attached: ${reason}`;
    }
  }

  private update(entry: Entry, change: Partial<Attachment>): void {
    if (!this.entries.includes(entry)) return;
    entry.attachment = { ...entry.attachment, ...change };
    this.host.requestUpdate();
  }
}
