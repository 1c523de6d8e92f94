// The server as a library: `createRelayServer(options)` is what `npm start` runs, with the settings
// given in code instead of the environment. Options map onto the one config schema (src/config.ts),
// so defaults and validation are the env app's.
import type { AgentDefinition } from '../agent/agent.js';
import { configSchema, parseConfig, type Config } from '../config.js';
import { startServer, type StartOptions } from './server.js';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

/** The settings the top-level options name; everything else of the config is `advanced`. */
const NAMED_SETTINGS = [
  'port', 'host', 'publicHost', 'twilioAuthToken', 'openaiApiKey', 'openaiBaseUrl', 'openaiModel', 'openaiTimeoutMs',
  'store', 'sqlitePath', 'redisUrl', 'graceMs', 'retentionMs', 'dtmfIdleMs', 'logLevel',
  // One process: node:cluster workers are the env app's (`WORKERS`).
  'workers',
] as const satisfies readonly (keyof Config)[];
type NamedSettings = (typeof NAMED_SETTINGS)[number];
const NAMED: ReadonlySet<string> = new Set(NAMED_SETTINGS);

/**
 * Any other setting of the env app, by its config name (the environment variable in camelCase:
 * `ADMIN_TOKEN` is `adminToken`), e.g. `{ adminToken, handoffNumber, maxSessions, redisPrefix }`.
 */
export type AdvancedSettings = Partial<Omit<Config, NamedSettings>>;

export interface RelayServerOptions {
  /** Instructions, tools, languages and keypad entries; the built-in demo agent when omitted. */
  agent?: AgentDefinition;
  /** HTTP and WebSocket port (one port); 0 picks a free one. Default 8080. */
  port?: number;
  /** Default '0.0.0.0'. */
  host?: string;
  /** The host Twilio reaches (TLS): the `wss://` URL in TwiML and signature checks. Default: the request's Host. */
  publicHost?: string;
  /** Turns on `X-Twilio-Signature` checks of the webhooks and the socket upgrade. */
  twilioAuthToken?: string;
  /** The LLM endpoint; with neither `apiKey` nor `baseURL` the server runs in offline mode (canned replies). */
  openai?: {
    apiKey?: string;
    /** Any OpenAI-compatible endpoint, e.g. `http://127.0.0.1:4000/v1`. */
    baseURL?: string;
    /** Default 'gpt-4o-mini' (an agent's `model.name` wins). */
    model?: string;
    /** Per-request timeout (the SDK retries twice). Default 30000. */
    timeoutMs?: number;
  };
  /** Where session snapshots live. Default 'sqlite'. */
  store?: 'memory' | 'sqlite' | 'redis';
  /** Default './data/sessions.db'. */
  sqlitePath?: string;
  /** redis://, rediss://, redis-sentinel:// or redis-cluster://. Default 'redis://127.0.0.1:6379'. */
  redisUrl?: string;
  timeouts?: {
    /** How long a dropped call may come back. Default 300000. */
    graceMs?: number;
    /** How long a session's state is kept after its last change. Default 1800000. */
    retentionMs?: number;
    /** Keypad idle time before a re-prompt. Default 10000. */
    dtmfIdleMs?: number;
  };
  /** pino level. Default 'info'. */
  logLevel?: LogLevel;
  /** Every other setting (see the README's configuration table), by its config name. */
  advanced?: AdvancedSettings;
}

export interface RelayServer {
  /** The port it listens on (the one picked when `port` was 0). */
  port: number;
  /** `http://127.0.0.1:<port>`: where `/twiml`, `/action`, `/healthz`, `/readyz` and `/metrics` answer. */
  httpUrl: string;
  /** `ws://127.0.0.1:<port>/relay`: the ConversationRelay socket (TwiML names the public `wss://` one). */
  relayUrl: string;
  /** Drains: live calls finish the reply they are speaking and are handed on through the store, then it stops. */
  close(): Promise<void>;
}

const OPTION_KEYS = new Set<keyof RelayServerOptions>([
  'agent', 'port', 'host', 'publicHost', 'twilioAuthToken', 'openai', 'store', 'sqlitePath', 'redisUrl', 'timeouts', 'logLevel', 'advanced',
]);

/** The options as a validated config: the env app's defaults for everything left out. */
export function relayServerConfig(options: RelayServerOptions = {}): Config {
  // A misspelt option would otherwise be dropped silently and its default used.
  const unknown = Object.keys(options).filter((key) => !OPTION_KEYS.has(key as keyof RelayServerOptions));
  if (unknown.length) throw new Error(`unknown relay server option(s): ${unknown.join(', ')}`);
  const settings = configSchema.shape;
  const unknownAdvanced = Object.keys(options.advanced ?? {}).filter((key) => !(key in settings) || NAMED.has(key));
  if (unknownAdvanced.length) throw new Error(`not an advanced setting (see RelayServerOptions): ${unknownAdvanced.join(', ')}`);
  const { openai = {}, timeouts = {} } = options;
  const named = {
    port: options.port,
    host: options.host,
    publicHost: options.publicHost,
    twilioAuthToken: options.twilioAuthToken,
    openaiApiKey: openai.apiKey,
    openaiBaseUrl: openai.baseURL,
    openaiModel: openai.model,
    openaiTimeoutMs: openai.timeoutMs,
    store: options.store,
    sqlitePath: options.sqlitePath,
    redisUrl: options.redisUrl,
    graceMs: timeouts.graceMs,
    retentionMs: timeouts.retentionMs,
    dtmfIdleMs: timeouts.dtmfIdleMs,
    logLevel: options.logLevel,
  };
  const given = Object.fromEntries(Object.entries(named).filter(([, value]) => value !== undefined));
  return parseConfig({ ...options.advanced, ...given, workers: 1 });
}

/** Starts the whole server (routes, relay socket, store, metrics, inspector) from options. */
export function createRelayServer(options: RelayServerOptions = {}): Promise<RelayServer> {
  return runRelayServer(relayServerConfig(options), { agent: options.agent });
}

/** The one start-up path of createRelayServer and the env app (`npm start`, which adds its logger and cluster role). */
export async function runRelayServer(config: Config, opts: StartOptions = {}): Promise<RelayServer> {
  const server = await startServer(config, opts);
  return { port: server.port, httpUrl: server.httpUrl, relayUrl: server.relayUrl, close: () => server.close() };
}
