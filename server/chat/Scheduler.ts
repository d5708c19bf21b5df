import { QueueFullError } from '../ParleyError.js';

export interface SchedulerJob {
  readonly userId: string;
  /** The slots it runs on: a model's (see addPool); the constructor's `slots` when absent. */
  readonly pool?: string;
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
  /** Slots of the unnamed pool, for jobs that name none (0: none until addPool). */
  readonly slots: number;
  readonly maxQueue: number;
  readonly maxQueuedPerUser: number;
}

interface Entry {
  readonly job: SchedulerJob;
  readonly pool: string;
  readonly arrival: number;
  /** Fair-queuing round: jobs run in (round, arrival) order. */
  readonly round: number;
  position: number;
  state: 'queued' | 'running' | 'withdrawn' | 'finished';
}

/**
 * Slots in pools (one per loaded model) plus one bounded wait queue that is fair between users
 * across every pool (start-time fair queuing): each job gets a round, max(the round now being
 * served, one past its user's previous job, on any model), and jobs start in (round, arrival)
 * order as soon as their own pool has a free slot. So a user's n-th outstanding job goes behind
 * every other user's earlier ones, a newcomer never jumps ahead of rounds already waiting (no
 * starvation), a busy model never holds up another's queue, and with one job per user it is
 * plain FIFO. A job's position counts the jobs ahead of it for the same pool, reported when it
 * changes.
 */
export class Scheduler {
  /** Free slots per pool. */
  private readonly free = new Map<string, number[]>();
  private readonly waiting: Entry[] = [];
  private arrivals = 0;
  private running = 0;
  /** The highest round started so far. */
  private round = 0;
  /** Per user: the round their next job gets at the earliest. */
  private readonly nextRound = new Map<string, number>();
  private idleWaiters: Array<() => void> = [];

  constructor(private readonly options: SchedulerOptions) {
    if (options.slots < 0) throw new RangeError('slots must be >= 0');
    if (options.slots > 0) this.addPool(DEFAULT_POOL, options.slots);
  }

  get activeCount(): number {
    return this.running;
  }

  get queuedCount(): number {
    return this.waiting.length;
  }

  /** Opens a pool of `slots` slots (a model that loaded); queued jobs for it start. */
  addPool(pool: string, slots: number): void {
    if (slots < 1) throw new RangeError('slots must be >= 1');
    if (this.free.has(pool)) throw new RangeError(`pool '${pool}' is open already`);
    this.free.set(pool, Array.from({ length: slots }, (_, index) => index));
    this.dispatch();
  }

  /** Closes a pool; its jobs must have ended (a model unloads only without leases). */
  removePool(pool: string): void {
    this.free.delete(pool);
  }

  /** Runs the job now if its pool has a free slot, else queues it. Throws QueueFullError when it cannot wait. */
  submit(job: SchedulerJob): Ticket {
    const pool = job.pool ?? DEFAULT_POOL;
    const runsNow = (this.free.get(pool)?.length ?? 0) > 0 && !this.waiting.some((waiting) => waiting.pool === pool);
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
    const entry: Entry = { job, pool, arrival: this.arrivals++, round, position: 0, state: 'queued' };
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
    const free = this.free.get(entry.pool) as number[];
    const preferred = entry.job.preferredSlot;
    const index = preferred === undefined ? -1 : free.indexOf(preferred);
    const slot = index >= 0 ? (free.splice(index, 1)[0] as number) : (free.shift() as number);
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
        this.free.get(entry.pool)?.push(slot);
        this.dispatch();
      });
  }

  /** Starts, in fair order, every waiting job whose pool has a free slot. */
  private dispatch(): void {
    let started = false;
    for (let index = 0; index < this.waiting.length; ) {
      const next = this.waiting[index] as Entry;
      if ((this.free.get(next.pool)?.length ?? 0) > 0) {
        this.waiting.splice(index, 1);
        this.start(next);
        started = true;
      } else {
        index++;
      }
    }
    if (started) this.reorder();
    this.notifyIdle();
  }

  /** Sorts the queue into fair order and reports every position that changed (counted per pool). */
  private reorder(): void {
    this.waiting.sort((a, b) => a.round - b.round || a.arrival - b.arrival);
    const ahead = new Map<string, number>();
    for (const entry of this.waiting) {
      const position = (ahead.get(entry.pool) ?? 0) + 1;
      ahead.set(entry.pool, position);
      if (entry.position !== position) {
        entry.position = position;
        entry.job.onQueuePosition(position);
      }
    }
  }

  private notifyIdle(): void {
    if (this.running !== 0 || this.waiting.length !== 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }
}

/** The pool of jobs that name none. */
const DEFAULT_POOL = '';
