// WORKERS > 1: a node:cluster primary that keeps n workers serving the one port over the shared
// store. SIGHUP reloads them one at a time: a fresh worker starts listening first, then the old one
// drains (see server.ts), so every live call is handed to a sibling and none is lost on a restart.
import cluster, { type Worker } from 'node:cluster';
import { once } from 'node:events';
import type { Logger } from './logger.js';

export interface PrimaryOptions {
  workers: number;
  logger: Logger;
}

export function runClusterPrimary({ workers, logger }: PrimaryOptions): void {
  const live = new Set<Worker>();
  /** Workers asked to drain (reload or shutdown): their exit is expected. */
  const retiring = new Set<Worker>();
  let stopping = false;
  let reloading: Promise<void> | undefined;

  const fork = async (): Promise<Worker> => {
    const worker = cluster.fork();
    live.add(worker);
    let listened = false;
    worker.once('listening', () => (listened = true));
    worker.once('exit', (code, signal) => {
      live.delete(worker);
      // One that never listened is the caller's failure to handle: replacing it would start the same
      // broken worker (e.g. a bad deploy) again and again.
      if (retiring.delete(worker) || stopping || !listened) return;
      // A crashed worker's calls are restored by its siblings; keep the pool at its size.
      logger.error({ pid: worker.process.pid, code, signal }, 'worker died; starting a replacement');
      void fork().catch((err: unknown) => logger.error({ err }, 'could not replace a worker'));
    });
    const [outcome] = await Promise.race([
      once(worker, 'listening').then(() => ['listening'] as const),
      once(worker, 'exit').then(() => ['exit'] as const),
    ]);
    if (outcome === 'exit') throw new Error(`worker ${worker.process.pid} exited before listening`);
    return worker;
  };

  const retire = async (worker: Worker): Promise<void> => {
    if (worker.isDead()) return; // its 'exit' is past: waiting for it would hang
    retiring.add(worker);
    const exited = once(worker, 'exit');
    worker.process.kill('SIGTERM');
    await exited;
  };

  const reload = async (): Promise<void> => {
    const old = [...live];
    logger.info({ workers: old.length }, 'reloading workers one at a time');
    for (const worker of old) {
      if (stopping) return;
      if (!live.has(worker)) continue; // died meanwhile and was replaced already
      await fork(); // the new worker listens before the old one stops taking calls
      await retire(worker);
    }
    logger.info({ workers: live.size }, 'workers reloaded');
  };

  process.on('SIGHUP', () => {
    if (stopping) return;
    reloading ??= reload()
      .catch((err: unknown) => logger.error({ err }, 'reload failed'))
      .finally(() => (reloading = undefined));
  });

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal, workers: live.size }, 'shutting down workers');
      void Promise.all([...live].map(retire)).then(() => process.exit(0));
    });
  }

  void Promise.all(Array.from({ length: workers }, fork)).then(
    () => logger.info({ workers }, 'workers ready'),
    (err: unknown) => {
      logger.error({ err }, 'a worker failed to start');
      process.exit(1);
    },
  );
}
