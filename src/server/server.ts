// Composes the server: one HTTP port for Hono routes and the /relay WebSocket.
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { WebSocketServer } from 'ws';
import { systemClock, type Clock } from '../clock.js';
import type { Config } from '../config.js';
import { resolveAgent, type AgentDefinition } from '../agent/agent.js';
import { createToolActor } from '../agent/tool-runner.js';
import { sessionMachine, timersOn } from '../machines/session.js';
import { selectReplyActor } from '../llm/select.js';
import { createStore, withTimeouts } from '../stores/index.js';
import type { SnapshotStore } from '../stores/types.js';
import { createHttpApp, publicOrigin, signaturePolicyWarning, signaturesRequired } from './http-app.js';
import { createLogger, type Logger } from './logger.js';
import { createMetrics } from './metrics.js';
import { handleRelaySocket } from './relay-socket.js';
import { SetupBacklog } from './setup-backlog.js';
import { SessionManager } from './session-manager.js';
import { encryptSnapshots } from './snapshot-encryption.js';
import { isValidTwilioSignature } from './signature.js';
import { relayUrl } from './twiml.js';
import { RELAY_TICKET_PATTERN } from './resume-proof.js';
import { startInspector, type Inspector } from './inspector.js';
import { StoreHealth } from './store-health.js';
import { startSweeper, sweepIntervalMs } from './store-sweeper.js';

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
  /**
   * Stop listening as soon as a drain begins (node:cluster workers: the primary then sends new
   * connections to a sibling). Otherwise the listener stays open to the end and answers 503.
   */
  stopListeningOnDrain?: boolean;
  /** Time for every session: event stamps, grace and keypad timers (tests move it forward). */
  clock?: Clock;
  /** The agent: instructions, tools, languages, keypad entries (the built-in demo agent when omitted). */
  agent?: AgentDefinition;
}

/** How long a peer gets to answer our close frame before its socket is cut. */
const CLOSE_HANDSHAKE_MS = 2000;

/**
 * Closes what is left (sockets that never sent setup) and lets every close handshake finish, so the
 * last frames of a handed-on call leave before its TCP connection does.
 */
async function closeSockets(wss: WebSocketServer): Promise<void> {
  await Promise.all(
    [...wss.clients].map(async (ws) => {
      if (ws.readyState === ws.CLOSED) return;
      const closed = once(ws, 'close');
      if (ws.readyState === ws.OPEN) ws.close(1001, 'server restarting');
      const cut = setTimeout(() => ws.terminate(), CLOSE_HANDSHAKE_MS);
      await closed;
      clearTimeout(cut);
    }),
  );
}

/**
 * Fencing epochs are kept as long as the retention (and never less long than their record), but not
 * less than this, so an acquire always outlives the few milliseconds until its first save.
 */
const MIN_LEASE_FLOOR_MS = 1000;

/** Largest frame ws accepts at all; our parser drops anything over 64 KiB without closing the call. */
const WS_MAX_PAYLOAD = 1024 * 1024;

/**
 * A SQLite file that cannot be written is a set-up mistake that will not mend itself: start-up fails
 * with the reason. A network store (Redis) may just not be up yet: the server starts not ready and
 * becomes ready when a probe gets through.
 */
async function checkStoreAtStartUp(health: StoreHealth, store: SnapshotStore, cfg: Config, logger: Logger): Promise<void> {
  const status = await health.check();
  if (status.ready) return;
  if (store.kind === 'sqlite') {
    await store.close().catch(() => {});
    throw new Error(`the SQLite store at ${cfg.sqlitePath} cannot be written: ${status.error}`);
  }
  logger.error({ store: store.kind, err: status.error }, 'store unavailable at start-up: starting not ready');
}

/**
 * `/relay`, or `/relay/<ticket>` as written in the TwiML that issued the socket's token; undefined for
 * anything else, including request targets that are not a path at all (`GET http://[ ...`).
 */
function relayPath(target: string | undefined): { ticket?: string } | undefined {
  let pathname: string;
  try {
    pathname = new URL(target ?? '/', 'http://x').pathname;
  } catch {
    return undefined;
  }
  const match = /^\/relay(?:\/([^/]+))?$/.exec(pathname);
  if (!match) return undefined;
  const ticket = match[1];
  if (ticket === undefined) return {};
  return RELAY_TICKET_PATTERN.test(ticket) ? { ticket } : undefined;
}

export async function startServer(config: Config, opts: StartOptions = {}): Promise<RunningServer> {
  const instanceId = config.instanceId ?? `${process.pid}-${randomUUID().slice(0, 8)}`;
  const cfg = { ...config, instanceId };
  const logger = opts.logger ?? createLogger(cfg.logLevel);
  const unprotected = signaturePolicyWarning(cfg);
  if (unprotected) logger.warn(unprotected);
  const metrics = createMetrics({ defaultMetrics: true });
  const raw =
    opts.store ??
    createStore(cfg, {
      prefix: opts.redisPrefix ?? cfg.redisPrefix,
      onError: (err) => logger.warn({ err: err.message }, 'store connection error; retrying'),
      minLeaseMs: Math.max(cfg.retentionMs, MIN_LEASE_FLOOR_MS),
      timeoutMs: cfg.storeTimeoutMs,
    });
  // Every store call is bounded and every failure counted here; readiness probes through the same path.
  let health: StoreHealth | undefined;
  const timed = withTimeouts(raw, {
    timeoutMs: cfg.storeTimeoutMs,
    unavailable: () => {
      const status = health?.current;
      return status && !status.ready ? status.error : undefined;
    },
    onFailure: (op, err) => {
      metrics.storeErrors.inc({ op });
      health?.suspect(err);
    },
  });
  const store = encryptSnapshots(cfg, timed, logger);
  health = new StoreHealth(timed, { intervalMs: cfg.storeProbeMs, logger });
  await checkStoreAtStartUp(health, store, cfg, logger);
  health.start();
  const sweeper = startSweeper(timed, sweepIntervalMs(cfg.retentionMs, cfg.storeSweepMs), logger);
  const clock = opts.clock ?? systemClock;
  const agent = resolveAgent(opts.agent, { language: cfg.language, welcomeGreeting: cfg.welcomeGreeting, model: cfg.openaiModel });
  const llm = selectReplyActor(cfg, agent, logger, metrics, clock);
  // A developer's tool failing shows in the log (redacted like a transcript), not only in the call's history.
  const toolActor = createToolActor(agent.tools, clock, { failed: (tool, content) => logger.warn({ tool, content }, 'tool failed') });
  const inspector: Inspector | undefined = cfg.inspect === '1' ? startInspector(cfg.inspectPort) : undefined;
  const manager = new SessionManager({
    store,
    machine: sessionMachine.provide({ actors: { llmReply: llm.actor, tool: toolActor, ...timersOn(clock, agent.keypad) } }),
    timeouts: { graceMs: cfg.graceMs, retentionMs: cfg.retentionMs, dtmfIdleMs: cfg.dtmfIdleMs, maxResumes: cfg.maxResumes },
    historyLimits: { maxTurns: cfg.historyMaxTurns, maxBytes: cfg.historyMaxBytes },
    maxSessions: cfg.maxSessions,
    // Signed upgrades make tickets meaningful: then a socket must be bound to its token, and a new call admitted.
    signedUpgrades: signaturesRequired(cfg),
    language: agent.language,
    instanceId,
    logger,
    metrics,
    inspect: inspector?.inspect,
    clock,
    hibernateAfterMs: cfg.sessionHibernateMs,
  });
  // Sessions a dead predecessor left in grace still expire at their own deadlines.
  await manager.adoptOrphanedDeadlines();
  let draining = false;
  const refusesNewWork = () => draining && !opts.stopListeningOnDrain;
  const storeHealth = health;
  const app = createHttpApp({
    config: cfg,
    agent,
    manager,
    store,
    logger,
    metrics,
    isDraining: () => draining,
    refusesNewWork,
    storeStatus: () => storeHealth.current,
  });
  const wss = new WebSocketServer({ noServer: true, maxPayload: WS_MAX_PAYLOAD });
  // Shared by every socket: a call holds nothing of it for itself.
  const relayDeps = {
    manager,
    logger,
    metrics,
    limits: cfg,
    storeReady: () => storeHealth.current.ready,
    setupTimeoutMs: cfg.setupTimeoutMs,
    setupBacklog: new SetupBacklog(),
  };

  const server = await new Promise<Server>((resolve) => {
    const s = serve({ fetch: app.fetch, port: cfg.port, hostname: cfg.host }, () => resolve(s as Server));
  });

  server.on('upgrade', (req, socket, head) => {
    const path = relayPath(req.url);
    // With signatures on, every socket is opened at the path its TwiML named, bound to that TwiML's token.
    if (!path || (path.ticket === undefined && signaturesRequired(cfg))) {
      socket.end('HTTP/1.1 404 Not Found\r\n\r\n');
      return;
    }
    const { ticket } = path;
    if (refusesNewWork()) {
      socket.end('HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n\r\n');
      return;
    }
    // Sessions held (in any state) or sockets open at the cap: this instance takes no more calls.
    if (manager.size >= cfg.maxSessions || wss.clients.size >= cfg.maxSessions) {
      metrics.limitHit('sessions');
      logger.warn({ sessions: manager.size, sockets: wss.clients.size }, 'session limit reached: socket upgrade refused');
      socket.end('HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n\r\n');
      return;
    }
    if (signaturesRequired(cfg)) {
      // Validated against the wss:// URL exactly as written in TwiML, with no params; rejected before upgrade.
      const origin = publicOrigin(cfg, req.headers.host, req.headers['x-forwarded-proto'] as string | undefined);
      const signature = req.headers['x-twilio-signature'];
      if (!isValidTwilioSignature(cfg.twilioAuthToken, typeof signature === 'string' ? signature : undefined, relayUrl({ ...origin, ticket }))) {
        logger.warn('socket upgrade with an invalid Twilio signature rejected');
        socket.end('HTTP/1.1 403 Forbidden\r\n\r\n');
        return;
      }
    }
    wss.handleUpgrade(req, socket, head, (ws) => handleRelaySocket(ws, relayDeps, socket, ticket));
  });

  let listenerClosed: Promise<void> | undefined;
  /** Waits for requests in flight (e.g. action callbacks of the calls just handed on); idle keep-alives go now. */
  const stopListening = () =>
    (listenerClosed ??= new Promise<void>((resolve) => {
      // A client that keeps a connection busy past the drain time is cut off rather than holding the exit.
      const force = setTimeout(() => server.closeAllConnections(), cfg.drainTimeoutMs).unref();
      server.close(() => {
        clearTimeout(force);
        resolve();
      });
      server.closeIdleConnections();
    }));

  /**
   * Deploy-safe stop: not ready at once (new calls and sockets get 503), every live call finishes its
   * reply and is handed on through the store, then the listener closes, then the store.
   */
  const drainAndClose = async () => {
    draining = true;
    logger.info({ sessions: manager.size, drainTimeoutMs: cfg.drainTimeoutMs }, 'draining: handing live calls on');
    if (opts.stopListeningOnDrain) void stopListening();
    await manager.drain(cfg.drainTimeoutMs);
    await closeSockets(wss);
    await stopListening();
    await manager.close();
    wss.close();
    storeHealth.stop();
    sweeper.stop();
    await store.close();
    inspector?.stop();
    logger.info('drained and closed');
  };
  let closing: Promise<void> | undefined;

  const port = (server.address() as AddressInfo).port;
  logger.info({ port, store: store.kind, llm: llm.mode, instanceId }, 'relay-actors listening');
  return {
    port,
    httpUrl: `http://127.0.0.1:${port}`,
    relayUrl: `ws://127.0.0.1:${port}/relay`,
    manager,
    store,
    llmMode: llm.mode,
    close: () => (closing ??= drainAndClose()),
  };
}
