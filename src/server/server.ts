// Composes the server: one HTTP port for Hono routes and the /relay WebSocket.
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { WebSocketServer } from 'ws';
import { systemClock, type Clock } from '../clock.js';
import type { Config } from '../config.js';
import { sessionMachine, timersOn } from '../machines/session.js';
import { selectReplyActor } from '../llm/select.js';
import { createStore } from '../stores/index.js';
import type { SnapshotStore } from '../stores/types.js';
import { createHttpApp, publicOrigin, signaturesRequired } from './http-app.js';
import { createLogger, type Logger } from './logger.js';
import { createMetrics } from './metrics.js';
import { handleRelaySocket } from './relay-socket.js';
import { SessionManager } from './session-manager.js';
import { isValidTwilioSignature } from './signature.js';
import { relayUrl } from './twiml.js';
import { startInspector, type Inspector } from './inspector.js';

export interface RunningServer {
  port: number;
  httpUrl: string;
  relayUrl: string;
  manager: SessionManager;
  store: SnapshotStore;
  llmMode: 'openai' | 'offline';
  close(): Promise<void>;
}

export interface StartOptions {
  store?: SnapshotStore;
  logger?: Logger;
  /** Prefix for Redis keys (tests isolate runs with it). */
  redisPrefix?: string;
  /** Time for every session: event stamps, grace and keypad timers (tests move it forward). */
  clock?: Clock;
}

/** Largest frame ws accepts at all; our parser drops anything over 64 KiB without closing the call. */
const WS_MAX_PAYLOAD = 1024 * 1024;

export async function startServer(config: Config, opts: StartOptions = {}): Promise<RunningServer> {
  const instanceId = config.instanceId ?? `${process.pid}-${randomUUID().slice(0, 8)}`;
  const cfg = { ...config, instanceId };
  const logger = opts.logger ?? createLogger(cfg.logLevel);
  const metrics = createMetrics({ defaultMetrics: true });
  const store =
    opts.store ??
    createStore(cfg, {
      prefix: opts.redisPrefix ?? cfg.redisPrefix,
      onError: (err) => logger.warn({ err: err.message }, 'store connection error; retrying'),
    });
  const clock = opts.clock ?? systemClock;
  const llm = selectReplyActor(cfg, logger, metrics, clock);
  const inspector: Inspector | undefined = cfg.inspect === '1' ? startInspector(cfg.inspectPort) : undefined;
  const manager = new SessionManager({
    store,
    machine: sessionMachine.provide({ actors: { llmReply: llm.actor, ...timersOn(clock) } }),
    timeouts: { graceMs: cfg.graceMs, retentionMs: cfg.retentionMs, dtmfIdleMs: cfg.dtmfIdleMs, maxResumes: cfg.maxResumes },
    language: cfg.language,
    instanceId,
    logger,
    metrics,
    inspect: inspector?.inspect,
    clock,
  });
  // Sessions a dead predecessor left in grace still expire at their own deadlines.
  await manager.adoptOrphanedDeadlines();
  const app = createHttpApp({ config: cfg, manager, store, logger, metrics });
  const wss = new WebSocketServer({ noServer: true, maxPayload: WS_MAX_PAYLOAD });

  const server = await new Promise<Server>((resolve) => {
    const s = serve({ fetch: app.fetch, port: cfg.port, hostname: cfg.host }, () => resolve(s as Server));
  });

  server.on('upgrade', (req, socket, head) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (path !== '/relay') {
      socket.end('HTTP/1.1 404 Not Found\r\n\r\n');
      return;
    }
    if (signaturesRequired(cfg)) {
      // Validated against the wss:// URL exactly as written in TwiML, with no params; rejected before upgrade.
      const origin = publicOrigin(cfg, req.headers.host, req.headers['x-forwarded-proto'] as string | undefined);
      const signature = req.headers['x-twilio-signature'];
      if (!isValidTwilioSignature(cfg.twilioAuthToken, typeof signature === 'string' ? signature : undefined, relayUrl(origin))) {
        logger.warn('socket upgrade with an invalid Twilio signature rejected');
        socket.end('HTTP/1.1 403 Forbidden\r\n\r\n');
        return;
      }
    }
    wss.handleUpgrade(req, socket, head, (ws) => handleRelaySocket(ws, { manager, logger, metrics }, socket));
  });

  const port = (server.address() as AddressInfo).port;
  logger.info({ port, store: store.kind, llm: llm.mode, instanceId }, 'relay-actors listening');
  return {
    port,
    httpUrl: `http://127.0.0.1:${port}`,
    relayUrl: `ws://127.0.0.1:${port}/relay`,
    manager,
    store,
    llmMode: llm.mode,
    async close() {
      await manager.close();
      for (const client of wss.clients) client.terminate();
      wss.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await store.close();
      inspector?.stop();
    },
  };
}
