// `npm start`: configuration from the environment, then serve until SIGINT/SIGTERM.
import { loadConfig } from '../config.js';
import { createLogger } from './logger.js';
import { startServer } from './server.js';

const config = loadConfig();
const logger = createLogger(config.logLevel);
const server = await startServer(config, { logger });
logger.info(
  { twiml: `${server.httpUrl}/twiml`, relay: server.relayUrl, inspect: config.inspect === '1' ? `ws://localhost:${config.inspectPort}` : 'off' },
  'ready: try `npm run call` in another terminal',
);

// A bug in one call's async path must not take every other call down with the process.
process.on('unhandledRejection', (reason) => logger.error({ err: reason }, 'unhandled promise rejection'));

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
