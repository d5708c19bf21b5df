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
  /** Fair-queuing round: jobs run in (round, arrival) order. */
  readonly round: number;
  position: number;
  state: 'queued' | 'running' | 'withdrawn' | 'finished';
}

/**
 * Fixed slots plus a bounded wait queue that is fair between users (start-time fair queuing):
 * each job gets a round, max(the round now being served, one past its user's previous job),
 * and jobs start in (round, arrival) order. So a user's n-th outstanding job goes behind every
 * other user's earlier ones, a newcomer never jumps ahead of rounds already waiting (no
 * starvation), and with one job per user it is plain FIFO. Positions are reported when they change.
 */
export class Scheduler {
  private readonly free: number[];
  private readonly waiting: Entry[] = [];
  private arrivals = 0;
  private running = 0;
  /** The highest round started so far. */
  private round = 0;
  /** Per user: the round their next job gets at the earliest. */
  private readonly nextRound = new Map<string, number>();
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
    const runsNow = this.free.length > 0 && this.waiting.length === 0;
    if (!runsNow) {
      if (this.waiting.length >= this.options.maxQueue) {
        throw new QueueFullError(`The queue is full (${this.options.maxQueue} waiting). Try again shortly.`);
      }
      const mine = this.waiting.filter((waiting) => waiting.job.userId === job.userId).length;
      if (mine >= this.options.maxQueuedPerUser) {
        throw new QueueFullError(`You already have ${mine} requests waiting; the limit is ${this.options.maxQueuedPerUser}.`);
      }
    }
    const round = Math.max(this.round, this.nextRound.get(job.userId) ?? 0);
    this.nextRound.set(job.userId, round + 1);
    const entry: Entry = { job, arrival: this.arrivals++, round, position: 0, state: 'queued' };
    if (runsNow) {
      this.start(entry);
    } else {
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
    if (entry.round > this.round) {
      this.round = entry.round;
      // Users whose next round is already reached carry no state worth keeping.
      for (const [user, next] of this.nextRound) if (next <= this.round) this.nextRound.delete(user);
    }
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
    this.waiting.sort((a, b) => a.round - b.round || a.arrival - b.arrival);
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
