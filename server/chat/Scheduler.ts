import { QueueFullError } from '../ParleyError.js';

export interface SchedulerJob {
  readonly userId: string;
  /** A slot this job would like (e.g. the one holding its conversation's KV cache). */
  readonly preferredSlot?: number;
  /** Runs on a slot. The slot is freed when the promise settles, whatever the outcome. */
  run(slot: number): Promise<void>;
  /** Called when the job's 1-based queue position is first known and each time it changes. */
  onQueuePosition(position: number): void;
}

export interface Ticket {
  /** True while the job waits for a slot. */
  readonly queued: boolean;
  /** Removes a queued job without running it. A running job is stopped through its own signal. */
  withdraw(): boolean;
}

export interface SchedulerOptions {
  readonly slots: number;
  readonly maxQueue: number;
  readonly maxQueuedPerUser: number;
}

interface Entry {
  readonly job: SchedulerJob;
  readonly arrival: number;
  position: number;
  state: 'queued' | 'running' | 'withdrawn' | 'finished';
}

/**
 * Fixed slots plus a bounded wait queue that is fair between users: a user's n-th waiting
 * job goes behind every other user's (n-1)-th, and ties keep arrival order. With one job per
 * user this is plain FIFO. Positions are reported when they change.
 */
export class Scheduler {
  private readonly free: number[];
  private readonly waiting: Entry[] = [];
  private arrivals = 0;
  private running = 0;
  private idleWaiters: Array<() => void> = [];

  constructor(private readonly options: SchedulerOptions) {
    if (options.slots < 1) throw new RangeError('slots must be >= 1');
    this.free = Array.from({ length: options.slots }, (_, index) => index);
  }

  get activeCount(): number {
    return this.running;
  }

  get queuedCount(): number {
    return this.waiting.length;
  }

  /** Runs the job now if a slot is free, else queues it. Throws QueueFullError when it cannot wait. */
  submit(job: SchedulerJob): Ticket {
    const entry: Entry = { job, arrival: this.arrivals++, position: 0, state: 'queued' };
    if (this.free.length > 0 && this.waiting.length === 0) {
      this.start(entry);
    } else {
      if (this.waiting.length >= this.options.maxQueue) {
        throw new QueueFullError(`The queue is full (${this.options.maxQueue} waiting). Try again shortly.`);
      }
      const mine = this.waiting.filter((waiting) => waiting.job.userId === job.userId).length;
      if (mine >= this.options.maxQueuedPerUser) {
        throw new QueueFullError(`You already have ${mine} requests waiting; the limit is ${this.options.maxQueuedPerUser}.`);
      }
      this.waiting.push(entry);
      this.reorder();
    }
    return {
      get queued() {
        return entry.state === 'queued';
      },
      withdraw: () => this.withdraw(entry),
    };
  }

  /** Resolves once nothing runs and nothing waits. */
  whenIdle(): Promise<void> {
    if (this.running === 0 && this.waiting.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private withdraw(entry: Entry): boolean {
    if (entry.state !== 'queued') return false;
    entry.state = 'withdrawn';
    this.waiting.splice(this.waiting.indexOf(entry), 1);
    this.reorder();
    this.notifyIdle();
    return true;
  }

  private start(entry: Entry): void {
    const preferred = entry.job.preferredSlot;
    const index = preferred === undefined ? -1 : this.free.indexOf(preferred);
    const slot = index >= 0 ? (this.free.splice(index, 1)[0] as number) : (this.free.shift() as number);
    entry.state = 'running';
    this.running++;
    let settled: Promise<void>;
    try {
      settled = entry.job.run(slot);
    } catch (error) {
      settled = Promise.reject(error);
    }
    settled
      .catch(() => {
        // A job reports its own failure to its client; the scheduler only reclaims the slot.
      })
      .finally(() => {
        entry.state = 'finished';
        this.running--;
        this.free.push(slot);
        this.dispatch();
      });
  }

  private dispatch(): void {
    let started = false;
    while (this.free.length > 0 && this.waiting.length > 0) {
      const next = this.waiting.shift() as Entry;
      this.start(next);
      started = true;
    }
    if (started) this.reorder();
    this.notifyIdle();
  }

  /** Sorts the queue into fair order and reports every position that changed. */
  private reorder(): void {
    const rank = new Map<Entry, number>();
    const seen = new Map<string, number>();
    for (const entry of [...this.waiting].sort((a, b) => a.arrival - b.arrival)) {
      const n = seen.get(entry.job.userId) ?? 0;
      rank.set(entry, n);
      seen.set(entry.job.userId, n + 1);
    }
    this.waiting.sort((a, b) => (rank.get(a) as number) - (rank.get(b) as number) || a.arrival - b.arrival);
    this.waiting.forEach((entry, index) => {
      const position = index + 1;
      if (entry.position !== position) {
        entry.position = position;
        entry.job.onQueuePosition(position);
      }
    });
  }

  private notifyIdle(): void {
    if (this.running !== 0 || this.waiting.length !== 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
