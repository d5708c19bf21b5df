import type { ReactiveController, ReactiveControllerHost } from 'lit';

/**
 * Files dragged over an area of the page: `active` while files are over it (to show the drop
 * target), and `onDrop` with the files dropped. Bind the handlers to the area's drag events.
 * Only drags that carry files count; text or links dragged within the page are left alone.
 *
 * Drag events fire for every child the pointer crosses, so `active` follows a count of
 * enters minus leaves; a drag that ends anywhere (dropped elsewhere, Esc) resets it. A file
 * dropped outside the area is refused, rather than left to the browser, which would open it in
 * place of the page.
 */
export class FileDropController implements ReactiveController {
  active = false;
  private depth = 0;

  constructor(
    private readonly host: ReactiveControllerHost,
    private readonly accepts: () => boolean,
    private readonly onDrop: (files: File[]) => void,
  ) {
    host.addController(this);
  }

  hostConnected(): void {
    window.addEventListener('dragend', this.reset);
    window.addEventListener('dragover', this.refuseOutside);
    window.addEventListener('drop', this.refuseOutside);
  }

  hostDisconnected(): void {
    window.removeEventListener('dragend', this.reset);
    window.removeEventListener('dragover', this.refuseOutside);
    window.removeEventListener('drop', this.refuseOutside);
  }

  readonly dragenter = (event: DragEvent): void => {
    if (!this.carriesFiles(event)) return;
    event.preventDefault();
    this.depth++;
    this.set(true);
  };

  readonly dragover = (event: DragEvent): void => {
    if (!this.carriesFiles(event)) return;
    // Without this the browser opens the file instead of dropping it here.
    event.preventDefault();
    if (event.dataTransfer) event.dataTransfer.dropEffect = 'copy';
    this.set(true);
  };

  readonly dragleave = (event: DragEvent): void => {
    if (!this.carriesFiles(event)) return;
    this.depth = Math.max(0, this.depth - 1);
    if (this.depth === 0) this.set(false);
  };

  readonly drop = (event: DragEvent): void => {
    if (!this.carriesFiles(event)) return;
    event.preventDefault();
    const files = [...(event.dataTransfer?.files ?? [])];
    this.reset();
    if (files.length > 0) this.onDrop(files);
  };

  private carriesFiles(event: DragEvent): boolean {
    return this.accepts() && (event.dataTransfer?.types.includes('Files') ?? false);
  }

  /** After the area's own handlers (they bubble first): a file drag elsewhere drops nothing. */
  private readonly refuseOutside = (event: DragEvent): void => {
    if (event.type === 'drop') this.reset();
    if (event.defaultPrevented || !event.dataTransfer?.types.includes('Files')) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'none';
  };

  private readonly reset = (): void => {
    this.depth = 0;
    this.set(false);
  };

  private set(active: boolean): void {
    if (this.active === active) return;
    this.active = active;
    this.host.requestUpdate();
  }
}
