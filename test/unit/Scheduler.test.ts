import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Scheduler, type SchedulerJob, type Ticket } from '../../server/chat/Scheduler.js';
import { ParleyError, QueueFullError } from '../../server/ParleyError.js';
import { mulberry32 } from '../../models/mulberry32.js';

/**
 * A fake job: run() records its slot and returns a promise the test settles.
 * This is the one place Parley's tests use a fake engine: the scheduler only sees promises.
 */
interface FakeJob extends SchedulerJob {
  readonly name: string;
  readonly positions: number[];
  slot: number | undefined;
  runs: number;
  finish(): void;
  fail(error?: unknown): void;
}

function fakeJob(
  name: string,
  userId: string,
  options: { preferredSlot?: number; order?: string[]; behaviour?: 'defer' | 'throw' | 'reject'; pool?: string } = {},
): FakeJob {
  let settle: { resolve: () => void; reject: (error: unknown) => void } | undefined;
  const job: FakeJob = {
    name,
    userId,
    ...(options.preferredSlot === undefined ? {} : { preferredSlot: options.preferredSlot }),
    ...(options.pool === undefined ? {} : { pool: options.pool }),
    positions: [],
    slot: undefined,
    runs: 0,
    run(slot) {
      job.slot = slot;
      job.runs++;
      options.order?.push(name);
      if (options.behaviour === 'throw') throw new Error(`${name} threw synchronously`);
      if (options.behaviour === 'reject') return Promise.reject(new Error(`${name} rejected`));
      return new Promise<void>((resolve, reject) => {
        settle = { resolve, reject };
      });
    },
    onQueuePosition(position) {
      job.positions.push(position);
    },
    finish() {
      assert.ok(settle, `${name} is not running`);
      settle.resolve();
    },
    fail(error = new Error(`${name} failed`)) {
      assert.ok(settle, `${name} is not running`);
      settle.reject(error);
    },
  };
  return job;
}

/** Lets the scheduler's promise handlers (catch/finally -> dispatch) run. */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function lastPosition(job: FakeJob): number | undefined {
  return job.positions[job.positions.length - 1];
}

const roomy = { maxQueue: 100, maxQueuedPerUser: 100 };

describe('Scheduler', () => {
  test('a job runs at once on slot 0 when a slot is free, and is never told a queue position', () => {
    const scheduler = new Scheduler({ slots: 2, ...roomy });
    const job = fakeJob('a', 'alice');
    const ticket = scheduler.submit(job);
    assert.equal(job.runs, 1);
    assert.equal(job.slot, 0);
    assert.equal(ticket.queued, false);
    assert.deepEqual(job.positions, []);
    assert.equal(scheduler.activeCount, 1);
    assert.equal(scheduler.queuedCount, 0);
  });

  test('negative slots, or a pool of fewer than one slot, cannot be built', () => {
    assert.throws(() => new Scheduler({ slots: -1, ...roomy }), RangeError);
    assert.throws(() => new Scheduler({ slots: 0, ...roomy }).addPool('m', 0), RangeError);
  });

  test('when every slot is busy, jobs wait and are told their 1-based positions', () => {
    const scheduler = new Scheduler({ slots: 2, ...roomy });
    const running = [fakeJob('r1', 'u1'), fakeJob('r2', 'u2')];
    for (const job of running) scheduler.submit(job);
    assert.deepEqual(running.map((job) => job.slot).sort(), [0, 1]);

    const waiting = [fakeJob('w1', 'u3'), fakeJob('w2', 'u4'), fakeJob('w3', 'u5')];
    const tickets = waiting.map((job) => scheduler.submit(job));
    assert.deepEqual(waiting.map((job) => job.positions), [[1], [2], [3]]);
    assert.deepEqual(tickets.map((ticket) => ticket.queued), [true, true, true]);
    assert.deepEqual(waiting.map((job) => job.runs), [0, 0, 0]);
    assert.equal(scheduler.activeCount, 2);
    assert.equal(scheduler.queuedCount, 3);
  });

  test('when a running job finishes, the head of the queue takes its slot and the others are told their new positions', async () => {
    const scheduler = new Scheduler({ slots: 1, ...roomy });
    const running = fakeJob('r', 'u0');
    scheduler.submit(running);
    const [q1, q2, q3] = [fakeJob('q1', 'u1'), fakeJob('q2', 'u2'), fakeJob('q3', 'u3')];
    const t1 = scheduler.submit(q1);
    scheduler.submit(q2);
    scheduler.submit(q3);

    running.finish();
    await settle();

    assert.equal(q1.runs, 1);
    assert.equal(q1.slot, 0);
    assert.equal(t1.queued, false);
    assert.deepEqual(q1.positions, [1]);
    assert.deepEqual(q2.positions, [2, 1]);
    assert.deepEqual(q3.positions, [3, 2]);
    assert.equal(scheduler.queuedCount, 2);
  });

  test('withdrawing a queued job returns true, it never runs, and the jobs behind it move up', async () => {
    const scheduler = new Scheduler({ slots: 1, ...roomy });
    const running = fakeJob('r', 'u0');
    scheduler.submit(running);
    const [q1, q2, q3] = [fakeJob('q1', 'u1'), fakeJob('q2', 'u2'), fakeJob('q3', 'u3')];
    const t1 = scheduler.submit(q1);
    scheduler.submit(q2);
    scheduler.submit(q3);

    assert.equal(t1.withdraw(), true);
    assert.equal(t1.queued, false);
    assert.equal(t1.withdraw(), false, 'a second withdraw has nothing to remove');
    assert.deepEqual(q2.positions, [2, 1]);
    assert.deepEqual(q3.positions, [3, 2]);
    assert.equal(scheduler.queuedCount, 2);

    running.finish();
    await settle();
    assert.equal(q2.runs, 1);
    q2.finish();
    await settle();
    q3.finish();
    await settle();
    await scheduler.whenIdle();
    assert.equal(q1.runs, 0, 'a withdrawn job never runs');
  });

  test('withdrawing a running job returns false and leaves it on its slot', async () => {
    const scheduler = new Scheduler({ slots: 1, ...roomy });
    const running = fakeJob('r', 'u0');
    const ticket = scheduler.submit(running);
    const waiting = fakeJob('w', 'u1');
    scheduler.submit(waiting);

    assert.equal(ticket.withdraw(), false);
    await settle();
    assert.equal(scheduler.activeCount, 1);
    assert.equal(waiting.runs, 0, 'the slot is still held by the running job');

    running.finish();
    await settle();
    assert.equal(waiting.runs, 1);
  });

  test("fairness: a second user's job goes ahead of the first user's 2nd and 3rd waiting jobs", async () => {
    const order: string[] = [];
    const scheduler = new Scheduler({ slots: 1, ...roomy });
    const blocker = fakeJob('blocker', 'x');
    scheduler.submit(blocker);
    const a1 = fakeJob('a1', 'alice', { order });
    const a2 = fakeJob('a2', 'alice', { order });
    const a3 = fakeJob('a3', 'alice', { order });
    const b1 = fakeJob('b1', 'bob', { order });
    for (const job of [a1, a2, a3, b1]) scheduler.submit(job);

    assert.deepEqual(b1.positions, [2]);
    assert.deepEqual(a2.positions, [2, 3], "alice's 2nd job moves back behind bob's 1st");
    assert.deepEqual(a3.positions, [3, 4]);

    const jobs = new Map([a1, a2, a3, b1].map((job) => [job.name, job]));
    blocker.finish();
    await settle();
    while (scheduler.activeCount > 0) {
      (jobs.get(order[order.length - 1] as string) as FakeJob).finish();
      await settle();
    }
    assert.deepEqual(order, ['a1', 'b1', 'a2', 'a3']);
  });

  test("fairness: each user's n-th waiting job goes behind every other user's (n-1)-th", async () => {
    const order: string[] = [];
    const scheduler = new Scheduler({ slots: 1, ...roomy });
    const blocker = fakeJob('blocker', 'x');
    scheduler.submit(blocker);
    const jobs = [
      fakeJob('a1', 'alice', { order }),
      fakeJob('a2', 'alice', { order }),
      fakeJob('a3', 'alice', { order }),
      fakeJob('b1', 'bob', { order }),
      fakeJob('b2', 'bob', { order }),
      fakeJob('c1', 'carol', { order }),
    ];
    for (const job of jobs) scheduler.submit(job);
    assert.deepEqual(
      [...jobs].sort((x, y) => (lastPosition(x) ?? 0) - (lastPosition(y) ?? 0)).map((job) => job.name),
      ['a1', 'b1', 'c1', 'a2', 'b2', 'a3'],
    );

    const byName = new Map(jobs.map((job) => [job.name, job]));
    blocker.finish();
    await settle();
    while (scheduler.activeCount > 0) {
      (byName.get(order[order.length - 1] as string) as FakeJob).finish();
      await settle();
    }
    assert.deepEqual(order, ['a1', 'b1', 'c1', 'a2', 'b2', 'a3']);
  });

  test('with one job per user, jobs run in arrival order (FIFO)', async () => {
    const order: string[] = [];
    const scheduler = new Scheduler({ slots: 1, ...roomy });
    const jobs = ['u1', 'u2', 'u3', 'u4', 'u5'].map((user) => fakeJob(user, user, { order }));
    for (const job of jobs) scheduler.submit(job);
    assert.deepEqual(jobs.slice(1).map(lastPosition), [1, 2, 3, 4]);
    for (const job of jobs) {
      job.finish();
      await settle();
    }
    assert.deepEqual(order, ['u1', 'u2', 'u3', 'u4', 'u5']);
  });

  test('a job submitted when the overall queue is full is refused with queue_full and never runs', async () => {
    const scheduler = new Scheduler({ slots: 1, maxQueue: 2, maxQueuedPerUser: 10 });
    const running = fakeJob('r', 'u0');
    scheduler.submit(running);
    const accepted = [fakeJob('q1', 'u1'), fakeJob('q2', 'u2')];
    for (const job of accepted) scheduler.submit(job);
    const refused = fakeJob('q3', 'u3');

    assert.throws(
      () => scheduler.submit(refused),
      (error: unknown) =>
        error instanceof QueueFullError && error instanceof ParleyError && error.code === 'queue_full' && /queue is full/i.test(error.message),
    );
    assert.equal(scheduler.queuedCount, 2);
    assert.deepEqual(refused.positions, []);

    running.finish();
    await settle();
    for (const job of accepted) {
      job.finish();
      await settle();
    }
    await scheduler.whenIdle();
    assert.equal(refused.runs, 0);
  });

  test('a user over maxQueuedPerUser is refused with queue_full while other users can still queue', async () => {
    const scheduler = new Scheduler({ slots: 1, maxQueue: 10, maxQueuedPerUser: 2 });
    const running = fakeJob('a0', 'alice');
    scheduler.submit(running);
    const a1 = fakeJob('a1', 'alice');
    const a2 = fakeJob('a2', 'alice');
    scheduler.submit(a1);
    scheduler.submit(a2);
    const a3 = fakeJob('a3', 'alice');

    assert.throws(
      () => scheduler.submit(a3),
      (error: unknown) => error instanceof QueueFullError && error.code === 'queue_full' && /limit is 2/.test(error.message),
    );
    const b1 = fakeJob('b1', 'bob');
    const finished = new Set<FakeJob>();
    const bobTicket = scheduler.submit(b1);
    assert.equal(bobTicket.queued, true);

    running.finish();
    await settle();
    // Finish whichever job holds the slot; run order is covered by the fairness tests.
    while (scheduler.activeCount > 0) {
      const current = [a1, a2, b1].find((job) => job.runs === 1 && !finished.has(job)) as FakeJob;
      finished.add(current);
      current.finish();
      await settle();
    }
    assert.deepEqual([a1.runs, a2.runs, b1.runs], [1, 1, 1]);
    await scheduler.whenIdle();
    assert.equal(a3.runs, 0, 'the refused job never runs');
  });

  test('a free preferred slot is used; a busy preferred slot falls back to another free slot', () => {
    const scheduler = new Scheduler({ slots: 3, ...roomy });
    const first = fakeJob('p2', 'u1', { preferredSlot: 2 });
    scheduler.submit(first);
    assert.equal(first.slot, 2);

    const second = fakeJob('p2-again', 'u2', { preferredSlot: 2 });
    scheduler.submit(second);
    assert.equal(second.runs, 1, 'a busy preferred slot does not make the job wait');
    assert.notEqual(second.slot, 2);

    const third = fakeJob('p1', 'u3', { preferredSlot: 1 });
    const ticket = scheduler.submit(third);
    assert.equal(ticket.queued, false);
    assert.deepEqual([first.slot, second.slot, third.slot].sort(), [0, 1, 2]);
  });

  test('a queued job gets its preferred slot when that is the slot that frees up', async () => {
    const scheduler = new Scheduler({ slots: 2, ...roomy });
    const onZero = fakeJob('zero', 'u0');
    const onOne = fakeJob('one', 'u1');
    scheduler.submit(onZero);
    scheduler.submit(onOne);
    const waiting = fakeJob('wants-1', 'u2', { preferredSlot: 1 });
    scheduler.submit(waiting);

    onOne.finish();
    await settle();
    assert.equal(waiting.slot, 1);
  });

  test('a job whose run() rejects frees its slot and the next job runs', async () => {
    const scheduler = new Scheduler({ slots: 1, ...roomy });
    const failing = fakeJob('failing', 'u1');
    scheduler.submit(failing);
    const next = fakeJob('next', 'u2');
    scheduler.submit(next);

    failing.fail();
    await settle();
    assert.equal(next.runs, 1);
    assert.equal(next.slot, 0);
    assert.equal(scheduler.activeCount, 1);
  });

  test('a job whose run() returns an already rejected promise frees its slot', async () => {
    const scheduler = new Scheduler({ slots: 1, ...roomy });
    const rejecting = fakeJob('rejecting', 'u1', { behaviour: 'reject' });
    scheduler.submit(rejecting);
    const next = fakeJob('next', 'u2');
    scheduler.submit(next);
    await settle();
    assert.equal(next.runs, 1);
    assert.equal(next.slot, 0);
  });

  test('a job whose run() throws synchronously frees its slot and the next job runs', async () => {
    const scheduler = new Scheduler({ slots: 1, ...roomy });
    const throwing = fakeJob('throwing', 'u1', { behaviour: 'throw' });
    assert.doesNotThrow(() => scheduler.submit(throwing), 'the scheduler absorbs the throw');
    const next = fakeJob('next', 'u2');
    scheduler.submit(next);
    await settle();
    assert.equal(next.runs, 1);
    assert.equal(next.slot, 0);
    next.finish();
    await scheduler.whenIdle();
    assert.equal(scheduler.activeCount, 0);
  });

  test('whenIdle() resolves at once when idle, and otherwise only after all running and queued work ends', async () => {
    const scheduler = new Scheduler({ slots: 1, ...roomy });
    await scheduler.whenIdle();

    const first = fakeJob('first', 'u1');
    const second = fakeJob('second', 'u2');
    const withdrawn = fakeJob('withdrawn', 'u3');
    scheduler.submit(first);
    scheduler.submit(second);
    const ticket = scheduler.submit(withdrawn);
    let idle = false;
    const idlePromise = scheduler.whenIdle().then(() => {
      idle = true;
    });

    ticket.withdraw();
    await settle();
    assert.equal(idle, false, 'still busy after a withdrawal');
    first.finish();
    await settle();
    assert.equal(idle, false, 'still busy while the second job runs');
    second.finish();
    await idlePromise;
    assert.equal(idle, true);
    assert.equal(scheduler.activeCount, 0);
    assert.equal(scheduler.queuedCount, 0);
  });

  test('randomized: slots stay in range and unshared, positions stay 1..n, and every accepted job runs exactly once', async () => {
    const random = mulberry32(0x5eed);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
    const slots = 3;
    const scheduler = new Scheduler({ slots, maxQueue: 8, maxQueuedPerUser: 3 });
    const users = ['ann', 'ben', 'cat', 'dan'];

    type Tracked = { job: FakeJob; ticket: Ticket; withdrawn: boolean };
    const accepted: Tracked[] = [];
    const refused: FakeJob[] = [];

    const running = () => accepted.filter((entry) => entry.job.runs === 1 && !isDone(entry.job));
    const queued = () => accepted.filter((entry) => entry.ticket.queued);
    const doneJobs = new Set<FakeJob>();
    const isDone = (job: FakeJob) => doneJobs.has(job);

    const checkInvariants = (step: number) => {
      const active = running();
      const usedSlots = active.map((entry) => entry.job.slot as number);
      for (const slot of usedSlots) assert.ok(Number.isInteger(slot) && slot >= 0 && slot < slots, `step ${step}: slot ${slot} out of range`);
      assert.equal(new Set(usedSlots).size, usedSlots.length, `step ${step}: two running jobs share a slot`);
      assert.equal(scheduler.activeCount, active.length, `step ${step}: activeCount`);
      assert.ok(scheduler.activeCount <= slots, `step ${step}: more jobs than slots`);

      const waiting = queued();
      assert.equal(scheduler.queuedCount, waiting.length, `step ${step}: queuedCount`);
      if (waiting.length > 0) assert.equal(scheduler.activeCount, slots, `step ${step}: a job waits while a slot is free`);
      for (const entry of waiting) assert.equal(entry.job.runs, 0, `step ${step}: a queued job has run`);

      // The last reported positions of waiting jobs are exactly 1..n: none missing, none shared.
      const reported = waiting.map((entry) => lastPosition(entry.job)).sort((x, y) => (x ?? 0) - (y ?? 0));
      assert.deepEqual(reported, waiting.map((_, index) => index + 1), `step ${step}: positions`);
      for (const entry of accepted) if (entry.withdrawn) assert.equal(entry.job.runs, 0, `step ${step}: a withdrawn job ran`);
      for (const job of refused) assert.equal(job.runs, 0, `step ${step}: a refused job ran`);
    };

    for (let step = 0; step < 400; step++) {
      const roll = random();
      if (roll < 0.45) {
        const preferred = random() < 0.3 ? Math.floor(random() * (slots + 1)) : undefined;
        const job = fakeJob(`j${step}`, pick(users), preferred === undefined ? {} : { preferredSlot: preferred });
        try {
          const ticket = scheduler.submit(job);
          accepted.push({ job, ticket, withdrawn: false });
        } catch (error) {
          assert.ok(error instanceof QueueFullError, `step ${step}: unexpected ${String(error)}`);
          refused.push(job);
        }
      } else if (roll < 0.85) {
        const active = running();
        if (active.length > 0) {
          const entry = pick(active);
          doneJobs.add(entry.job);
          if (random() < 0.2) entry.job.fail();
          else entry.job.finish();
        }
      } else {
        if (accepted.length > 0) {
          const entry = pick(accepted);
          const wasQueued = entry.ticket.queued;
          const result = entry.ticket.withdraw();
          assert.equal(result, wasQueued, `step ${step}: withdraw() returns whether the job was queued`);
          if (result) entry.withdrawn = true;
        }
      }
      await settle();
      checkInvariants(step);
    }

    // Drain: finish everything still running until the scheduler is idle.
    for (let guard = 0; scheduler.activeCount > 0; guard++) {
      assert.ok(guard < 1000, 'drain did not converge');
      for (const entry of running()) {
        doneJobs.add(entry.job);
        entry.job.finish();
      }
      await settle();
      checkInvariants(-1);
    }
    await scheduler.whenIdle();
    assert.equal(scheduler.queuedCount, 0);
    for (const entry of accepted) assert.equal(entry.job.runs, entry.withdrawn ? 0 : 1, `${entry.job.name} ran the wrong number of times`);
    assert.ok(refused.length > 0 && accepted.some((entry) => entry.withdrawn), 'the random walk exercised refusals and withdrawals');
  });

  describe('pools (one per loaded model)', () => {
    test('a job for a pool that is not open waits, and starts when the pool opens', async () => {
      const scheduler = new Scheduler({ slots: 0, ...roomy });
      const job = fakeJob('b1', 'bob', { pool: 'demo' });
      const ticket = scheduler.submit(job);
      assert.equal(ticket.queued, true);
      assert.deepEqual(job.positions, [1]);
      scheduler.addPool('demo', 1);
      assert.equal(job.runs, 1);
      assert.equal(job.slot, 0);
      job.finish();
      await settle();
      assert.equal(scheduler.activeCount, 0);
    });

    test("a full pool never holds up another pool's jobs, and positions count per pool", async () => {
      const scheduler = new Scheduler({ slots: 0, ...roomy });
      scheduler.addPool('a', 1);
      scheduler.addPool('b', 1);
      const a1 = fakeJob('a1', 'u1', { pool: 'a' });
      const a2 = fakeJob('a2', 'u2', { pool: 'a' });
      const a3 = fakeJob('a3', 'u3', { pool: 'a' });
      const b1 = fakeJob('b1', 'u4', { pool: 'b' });
      for (const job of [a1, a2, a3, b1]) scheduler.submit(job);
      assert.equal(a1.runs, 1);
      assert.equal(b1.runs, 1, 'b runs at once although a has a queue');
      assert.equal(lastPosition(a2), 1);
      assert.equal(lastPosition(a3), 2);
      const b2 = fakeJob('b2', 'u5', { pool: 'b' });
      scheduler.submit(b2);
      assert.equal(lastPosition(b2), 1, "b2 counts only b's queue");
      b1.finish();
      await settle();
      assert.equal(b2.runs, 1);
      assert.equal(a2.runs, 0);
      a1.finish();
      await settle();
      assert.equal(a2.runs, 1);
      assert.equal(lastPosition(a3), 1);
    });

    test("fairness holds across pools: a user's second job anywhere goes behind others' first", async () => {
      const scheduler = new Scheduler({ slots: 0, ...roomy });
      scheduler.addPool('a', 1);
      const order: string[] = [];
      const hog = fakeJob('hog', 'alice', { pool: 'a', order });
      scheduler.submit(hog);
      // Alice also has a job on model b (not loaded yet), then queues a second on a; Bob queues one on a.
      scheduler.submit(fakeJob('alice-b', 'alice', { pool: 'b', order }));
      const aliceA = fakeJob('alice-a2', 'alice', { pool: 'a', order });
      const bobA = fakeJob('bob-a', 'bob', { pool: 'a', order });
      scheduler.submit(aliceA);
      scheduler.submit(bobA);
      assert.equal(lastPosition(bobA), 1, "Bob's first job goes ahead of Alice's third");
      assert.equal(lastPosition(aliceA), 2);
      hog.finish();
      await settle();
      assert.deepEqual(order, ['hog', 'bob-a']);
    });
  });
});
