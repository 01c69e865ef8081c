// BullMQ side of the queue-throughput comparison.
//
// Usage:
//   node bench.mjs --redis redis://127.0.0.1:6379 --prefix <keyprefix> \
//                  --jobs N --workers W [--concurrency C]
//
// Prints one JSON line on stdout (diagnostics go to stderr):
//   push_per_s     N no-op jobs added one at a time, each `queue.add` awaited
//                  before the next (one job per request, as a request path would).
//   process_per_s  N no-op jobs, already waiting, processed by W forked worker
//                  processes, each running one BullMQ Worker with concurrency C.
//
// All keys live under the given BullMQ prefix, which must be unused; they are
// deleted at the end.

import { fork } from 'node:child_process';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

const require = createRequire(import.meta.url);
const BULLMQ_VERSION = require('bullmq/package.json').version;

const PUSH_QUEUE = 'bench-push';
const PROCESS_QUEUE = 'bench-process';
const BULK_CHUNK = 1000;
const JOB_OPTS = { removeOnComplete: true, removeOnFail: 1000 };

function log(...args) {
  console.error('[bench]', ...args);
}

function parse() {
  const { values } = parseArgs({
    options: {
      redis: { type: 'string', default: 'redis://127.0.0.1:6379' },
      prefix: { type: 'string' },
      jobs: { type: 'string', default: '5000' },
      workers: { type: 'string', default: '1' },
      concurrency: { type: 'string', default: '1' },
      // internal: run as a forked worker process
      'worker-mode': { type: 'boolean', default: false },
    },
    strict: true,
  });
  const int = (name) => {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < 1) {
      throw new Error(`--${name} must be a positive integer, got ${values[name]}`);
    }
    return n;
  };
  return {
    redis: values.redis,
    prefix: values.prefix ?? `afbench:bullmq:${randomBytes(6).toString('hex')}`,
    jobs: int('jobs'),
    workers: int('workers'),
    concurrency: int('concurrency'),
    workerMode: values['worker-mode'],
  };
}

function connection(url) {
  // BullMQ requires maxRetriesPerRequest: null for the blocking worker connection.
  return { url, maxRetriesPerRequest: null };
}

// ---------------------------------------------------------------------------
// Worker process
// ---------------------------------------------------------------------------

async function workerMain(cfg) {
  let completed = 0;
  let reported = 0;
  let flushScheduled = false;
  const flush = () => {
    flushScheduled = false;
    if (completed > reported && process.connected) {
      process.send({ type: 'completed', n: completed - reported });
      reported = completed;
    }
  };

  const worker = new Worker(PROCESS_QUEUE, async () => undefined, {
    connection: connection(cfg.redis),
    prefix: cfg.prefix,
    concurrency: cfg.concurrency,
    autorun: false,
  });
  worker.on('completed', () => {
    completed += 1;
    // Coalesce: at most one IPC message per event-loop turn.
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(flush);
    }
  });
  worker.on('failed', (job, err) => {
    if (process.connected) process.send({ type: 'failed', error: String(err?.message ?? err) });
  });
  worker.on('error', (err) => log(`worker ${process.pid} error:`, err?.message ?? err));

  let closing = false;
  const shutdown = async (code) => {
    if (closing) return;
    closing = true;
    const timer = setTimeout(() => process.exit(code || 1), 5000);
    timer.unref();
    try {
      await worker.close();
    } catch (err) {
      log(`worker ${process.pid} close:`, err?.message ?? err);
    }
    flush();
    process.exit(code);
  };

  process.on('message', (msg) => {
    if (msg?.type === 'start') {
      worker.run().catch((err) => {
        log(`worker ${process.pid} run:`, err?.message ?? err);
        shutdown(1);
      });
    } else if (msg?.type === 'stop') {
      shutdown(0);
    }
  });
  // Parent gone: do not linger.
  process.on('disconnect', () => shutdown(0));
  process.on('SIGTERM', () => shutdown(0));
  process.on('SIGINT', () => shutdown(0));

  await worker.waitUntilReady(); // both the command and the blocking connection
  process.send({ type: 'ready' });
}

// ---------------------------------------------------------------------------
// Parent: orchestration and measurement
// ---------------------------------------------------------------------------

function globEscape(s) {
  return s.replace(/[*?[\]\\]/g, (c) => `\\${c}`);
}

async function prefixKeys(client, prefix) {
  const keys = [];
  let cursor = '0';
  do {
    const [next, batch] = await client.scan(cursor, 'MATCH', `${globEscape(prefix)}:*`, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  return keys;
}

async function deletePrefix(client, prefix) {
  const keys = await prefixKeys(client, prefix);
  for (let i = 0; i < keys.length; i += 500) {
    await client.del(...keys.slice(i, i + 500));
  }
  return keys.length;
}

let interrupted = false;

async function measurePush(queue, n) {
  const t0 = performance.now();
  for (let i = 0; i < n && !interrupted; i++) {
    await queue.add('noop', {}, JOB_OPTS);
  }
  const seconds = (performance.now() - t0) / 1000;
  return { seconds, perSecond: n / seconds };
}

async function fillQueue(queue, n) {
  for (let done = 0; done < n; done += BULK_CHUNK) {
    const size = Math.min(BULK_CHUNK, n - done);
    await queue.addBulk(Array.from({ length: size }, () => ({ name: 'noop', data: {}, opts: JOB_OPTS })));
  }
}

function spawnWorkers(cfg, children) {
  const script = fileURLToPath(import.meta.url);
  const args = [
    '--worker-mode',
    '--redis', cfg.redis,
    '--prefix', cfg.prefix,
    '--concurrency', String(cfg.concurrency),
  ];
  const ready = [];
  for (let i = 0; i < cfg.workers; i++) {
    // Children's stdout goes to our stderr: stdout carries only the JSON line.
    const child = fork(script, args, { stdio: ['ignore', 2, 2, 'ipc'] });
    children.push(child);
    ready.push(new Promise((resolve, reject) => {
      child.on('message', (msg) => { if (msg?.type === 'ready') resolve(); });
      child.once('error', reject);
      child.once('exit', (code, signal) => reject(new Error(`worker exited before ready (code ${code}, signal ${signal})`)));
    }));
  }
  return Promise.all(ready);
}

// Completion counting: each worker process counts its own BullMQ 'completed'
// events (emitted once moveToFinished has returned from Redis, i.e. the job is
// recorded as completed) and reports the increments over IPC, coalesced to at
// most one message per event-loop turn. The clock stops when the sum reaches N.
// This was preferred to polling getJobCounts every ~5 ms (5 ms resolution, extra
// Redis load competing with the workers, and with removeOnComplete the completed
// count stays at 0) and to QueueEvents (an extra stream reader on the same Redis,
// and event delivery lag on top of the completion itself).
function measureProcess(cfg, children) {
  return new Promise((resolve, reject) => {
    let total = 0;
    let t0 = 0;
    let finished = false;
    const finish = (err, value) => {
      if (finished) return;
      finished = true;
      err ? reject(err) : resolve(value);
    };
    for (const child of children) {
      child.on('message', (msg) => {
        if (msg?.type === 'completed') {
          total += msg.n;
          if (total >= cfg.jobs) {
            const seconds = (performance.now() - t0) / 1000;
            finish(null, { seconds, perSecond: cfg.jobs / seconds, completed: total });
          }
        } else if (msg?.type === 'failed') {
          finish(new Error(`a job failed: ${msg.error}`));
        }
      });
      child.on('exit', (code, signal) => finish(new Error(`worker exited during the run (code ${code}, signal ${signal})`)));
    }
    t0 = performance.now();
    for (const child of children) child.send({ type: 'start' });
  });
}

async function stopWorkers(children) {
  await Promise.all(children.map((child) => new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => { clearTimeout(kill); resolve(); });
    if (child.connected) child.send({ type: 'stop' });
    else child.kill('SIGTERM');
  })));
}

async function main(cfg) {
  const children = [];
  // Last resort: never leave worker processes behind.
  process.on('exit', () => { for (const c of children) if (c.exitCode === null) c.kill('SIGKILL'); });
  // First SIGINT/SIGTERM: abort the current step and clean up; a second one exits at once.
  let abort;
  const aborted = new Promise((_, reject) => { abort = reject; });
  aborted.catch(() => {});
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
      if (interrupted) process.exit(130);
      interrupted = true;
      log(`${sig}: stopping and cleaning up`);
      abort(new Error(`interrupted by ${sig}`));
    });
  }
  const step = (promise) => Promise.race([promise, aborted]);

  // Plain connection for the freshness check and the final key sweep: a Queue
  // writes its meta key as soon as it connects, so it is created only after the check.
  // It gives up after a few attempts, so an unreachable Redis fails the run instead of hanging.
  const client = new IORedis(cfg.redis, {
    maxRetriesPerRequest: 2,
    retryStrategy: (times) => (times > 5 ? null : 200),
  });
  client.on('error', (err) => log('redis error:', err?.message ?? err));
  const queues = [];

  let ownsPrefix = false;
  let exitCode = 0;
  try {
    await client.ping();
    const existing = await prefixKeys(client, cfg.prefix);
    if (existing.length > 0) {
      throw new Error(`prefix ${cfg.prefix} is not fresh (${existing.length} keys exist); pick another`);
    }
    ownsPrefix = true;
    const queueOpts = { connection: connection(cfg.redis), prefix: cfg.prefix };
    const pushQueue = new Queue(PUSH_QUEUE, queueOpts);
    const processQueue = new Queue(PROCESS_QUEUE, queueOpts);
    for (const q of [pushQueue, processQueue]) {
      queues.push(q);
      q.on('error', (err) => log('queue error:', err?.message ?? err));
    }
    log(`bullmq ${BULLMQ_VERSION}, prefix ${cfg.prefix}, jobs ${cfg.jobs}, workers ${cfg.workers}, concurrency ${cfg.concurrency}`);

    const push = await step(measurePush(pushQueue, cfg.jobs));
    log(`push: ${cfg.jobs} jobs in ${push.seconds.toFixed(3)} s`);
    await step(pushQueue.obliterate({ force: true }));

    await step(fillQueue(processQueue, cfg.jobs));
    const waiting = await processQueue.getWaitingCount();
    if (waiting !== cfg.jobs) throw new Error(`expected ${cfg.jobs} waiting jobs, found ${waiting}`);
    await step(spawnWorkers(cfg, children));
    const proc = await step(measureProcess(cfg, children));
    log(`process: ${proc.completed} jobs in ${proc.seconds.toFixed(3)} s`);
    await stopWorkers(children);

    const left = await processQueue.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'failed');
    if (Object.values(left).some((v) => v > 0)) {
      throw new Error(`queue not drained after the run: ${JSON.stringify(left)}`);
    }

    const round = (x, d) => Number(x.toFixed(d));
    process.stdout.write(JSON.stringify({
      bullmq_version: BULLMQ_VERSION,
      jobs: cfg.jobs,
      workers: cfg.workers,
      concurrency: cfg.concurrency,
      push_per_s: round(push.perSecond, 1),
      push_seconds: round(push.seconds, 4),
      process_per_s: round(proc.perSecond, 1),
      process_seconds: round(proc.seconds, 4),
    }) + '\n');
  } catch (err) {
    log('error:', interrupted ? err.message : err?.stack ?? err);
    exitCode = interrupted ? 130 : 1;
  } finally {
    await stopWorkers(children);
    await Promise.allSettled(queues.map((q) => q.close()));
    if (ownsPrefix) {
      try {
        const n = await deletePrefix(client, cfg.prefix);
        log(`deleted ${n} keys under ${cfg.prefix}`);
      } catch (err) {
        log('cleanup error:', err?.message ?? err);
        exitCode = 1;
      }
    }
    await client.quit().catch(() => client.disconnect());
  }
  return exitCode;
}

const cfg = parse();
if (cfg.workerMode) {
  workerMain(cfg).catch((err) => {
    log(`worker ${process.pid} failed:`, err?.stack ?? err);
    process.exit(1);
  });
} else {
  main(cfg).then(
    (code) => process.exit(code),
    (err) => {
      log('fatal:', err?.stack ?? err);
      process.exit(1);
    },
  );
}
