import type { ChatMessage } from './ChatMessage.js';

/**
 * The live text of one streaming reply. Deltas are appended to the message at once, but
 * listeners hear about them at most once per animation frame, so a fast model re-renders one
 * message per frame rather than the conversation per token.
 */
export class ReplyStream extends EventTarget {
  private frame = 0;

  constructor(readonly message: ChatMessage) {
    super();
  }

  get text(): string {
    return this.message.text;
  }

  append(piece: string): void {
    this.message.text += piece;
    if (this.frame === 0) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.dispatchEvent(new Event('change'));
      });
    }
  }

  /** Tells listeners now (a terminal frame, or a hidden tab where frames do not run). */
  flush(): void {
    if (this.frame !== 0) cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.dispatchEvent(new Event('change'));
  }
}
