// `npm start`: configuration from the environment, then serve until SIGINT/SIGTERM, which drain the
// live calls onto other instances (or, with WORKERS > 1, sibling workers) before the process exits.
// It starts the server as createRelayServer does (runRelayServer), with the built-in demo agent.
import cluster from 'node:cluster';
import { loadConfig } from '../config.js';
import { runClusterPrimary } from './cluster-primary.js';
import { createLogger } from './logger.js';
import { runRelayServer } from './relay-server.js';

const config = loadConfig();
const logger = createLogger(config.logLevel);

// A bug in one call's async path must not take every other call down with the process.
process.on('unhandledRejection', (reason) => logger.error({ err: reason }, 'unhandled promise rejection'));

if (config.workers > 1 && cluster.isPrimary) {
  runClusterPrimary({ workers: config.workers, logger });
} else {
  const server = await runRelayServer(config, { logger, stopListeningOnDrain: cluster.isWorker }).catch((err: unknown) => {
    // e.g. a SQLite path that cannot be opened or written: one clear line, not a stack trace.
    const reason = err instanceof Error ? err.message : String(err);
    logger.fatal({ err: reason }, 'start-up failed');
    process.stderr.write(`start-up failed: ${reason}\n`);
    process.exit(1);
  });
  logger.info(
    { twiml: `${server.httpUrl}/twiml`, relay: server.relayUrl, inspect: config.inspect === '1' ? `ws://localhost:${config.inspectPort}` : 'off' },
    'ready: try `npm run call` in another terminal',
  );
  let stopping = false;
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, 'shutting down');
      server.close().then(
        () => process.exit(0),
        (err: unknown) => {
          logger.error({ err }, 'shutdown failed');
          process.exit(1);
        },
      );
    });
  }
  // Reloads are the cluster primary's job; a single process ignores SIGHUP rather than dying of it.
  process.on('SIGHUP', () => logger.warn('SIGHUP ignored: reloads need WORKERS > 1 (see README)'));
}
