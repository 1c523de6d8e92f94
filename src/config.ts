// Runtime configuration from the environment, validated once at start-up.
import { z } from 'zod';
import { connectionOverridesSetting, DEFAULT_ACTION_URL_OVERRIDES } from './server/connection-overrides.js';
import { KeyringError, parseKeyring } from './stores/keyring.js';
import { parseRedisUrl } from './stores/redis-connection.js';

const ms = (fallback: number) => z.coerce.number().int().nonnegative().default(fallback);
const limit = (fallback: number) => z.coerce.number().int().positive().default(fallback);
/** The longest delay a Node timer takes (longer ones fire at once). */
const MAX_TIMER_MS = 2 ** 31 - 1;

export const configSchema = z.object({
  port: z.coerce.number().int().min(0).max(65535).default(8080),
  host: z.string().default('0.0.0.0'),
  /** Host name Twilio reaches us on; used for the wss:// URL in TwiML and signature checks. */
  publicHost: z.string().optional(),
  twilioAuthToken: z.string().optional(),
  /** Signature checks are on whenever an auth token is set, unless explicitly disabled. */
  validateSignatures: z.enum(['auto', 'true', 'false']).default('auto'),
  /**
   * Twilio connection overrides put on the <Connect action> URL as its fragment (e.g. `rc=5&rp=ct,rt,5xx`),
   * so Twilio retries a callback that meets a restarting process; '' turns them off.
   */
  actionUrlOverrides: connectionOverridesSetting('ACTION_URL_OVERRIDES').default(DEFAULT_ACTION_URL_OVERRIDES),
  openaiApiKey: z.string().optional(),
  openaiBaseUrl: z.string().optional(),
  openaiModel: z.string().default('gpt-4o-mini'),
  /** Per-request LLM timeout; the SDK default (10 min) would leave a caller in silence. */
  openaiTimeoutMs: ms(30_000),
  store: z.enum(['memory', 'sqlite', 'redis']).default('sqlite'),
  sqlitePath: z.string().default('./data/sessions.db'),
  /** redis://, rediss://, redis-sentinel:// or redis-cluster:// (src/stores/redis-connection.ts). */
  redisUrl: z.string().default('redis://127.0.0.1:6379'),
  /** Key prefix in Redis; instances sharing sessions must use the same one. */
  redisPrefix: z.string().default('relay:'),
  /** Every store call fails after this long without an answer (the caller then hears an apology). */
  storeTimeoutMs: z.coerce.number().int().min(1).default(2000),
  /** How often readiness writes a probe through the store. */
  storeProbeMs: z.coerce.number().int().min(1).default(1000),
  /** How often expired state is dropped; unset: a quarter of RETENTION_MS, between 250 ms and 60 s. */
  storeSweepMs: z.coerce.number().int().min(1).optional(),
  dtmfIdleMs: ms(10_000),
  graceMs: ms(5 * 60_000),
  retentionMs: ms(30 * 60_000),
  maxResumes: z.coerce.number().int().nonnegative().default(5),
  /** With signatures on: how long the callToken of a new call's TwiML admits its first socket. */
  callTokenTtlMs: ms(60_000),
  /**
   * A connected call with nothing going on (no reply, tool or keypad entry) for this long keeps only
   * its stored snapshot in memory, not a running actor; anything it is sent revives it. 0: never.
   */
  sessionHibernateMs: z.coerce.number().int().min(0).max(MAX_TIMER_MS).default(2000),
  /** On SIGTERM, how long live calls may take to finish the reply they are speaking before they are handed on. */
  drainTimeoutMs: ms(10_000),
  /** node:cluster workers on the one port; more than one lets a reload (SIGHUP) move calls to a sibling. */
  workers: z.coerce.number().int().min(1).max(64).default(1),
  welcomeGreeting: z.string().default('Hello! How can I help you today?'),
  language: z.string().default('en-US'),
  /** Checked at start-up: a token with other characters could never match an `Authorization: Bearer` header. */
  adminToken: z
    .string()
    .regex(/^[A-Za-z0-9._~+/-]+=*$/, 'ADMIN_TOKEN may only use A-Z a-z 0-9 . _ ~ + / - (and trailing =)')
    .optional(),
  /** Phone number (E.164) or SIP URI the caller is transferred to after a human_agent_handoff. */
  handoffNumber: z.string().min(1).optional(),
  inspect: z.enum(['0', '1']).default('0'),
  /**
   * `1`: serve /playground, a page to talk to the agent from a browser (dev only; refused with
   * PUBLIC_HOST, where anyone could reach it); `force`: serve it even then.
   */
  playground: z.enum(['0', '1', 'force']).default('0'),
  inspectPort: z.coerce.number().int().min(1).max(65535).default(8081),
  logLevel: z.string().default('info'),
  instanceId: z.string().optional(),
  /** Longer final prompts are cut to this many bytes (at a word or character boundary) before the LLM sees them. */
  maxPromptBytes: limit(4 * 1024),
  /** History kept per call (sent to the LLM and stored), oldest turns dropped first. */
  historyMaxTurns: limit(60),
  historyMaxBytes: limit(32 * 1024),
  /** Unsent bytes a socket may hold (a caller not reading); beyond it the socket is closed (1008). */
  maxSendBufferBytes: limit(1024 * 1024),
  /** Frames a socket may send while its session is being created or restored; beyond it: close 1008. */
  maxQueuedFrames: limit(32),
  /** A socket that sends no valid setup in this time is closed (1008). Node caps timers at 2^31 - 1 ms. */
  setupTimeoutMs: z.coerce.number().int().min(1).max(MAX_TIMER_MS).default(10_000),
  /** Sessions held by this instance (any state); beyond it new sockets are refused with 503. */
  maxSessions: limit(1000),
  /** Encrypts snapshots at rest: one base64 AES-256 key (key id `default`). */
  snapshotKey: z.string().optional(),
  /** Key rotation: `kid1:key1,kid2:key2`; the first encrypts, all decrypt. */
  snapshotKeys: z.string().optional(),
}).superRefine((config, ctx) => {
  // Parsed again where the store is built; checked here so a bad key fails with the other settings.
  try {
    parseKeyring({ key: config.snapshotKey, keys: config.snapshotKeys });
  } catch (err) {
    if (!(err instanceof KeyringError)) throw err;
    ctx.addIssue({ code: 'custom', message: err.message, path: [config.snapshotKeys === undefined ? 'snapshotKey' : 'snapshotKeys'] });
  }
  if (config.playground === '1' && config.publicHost) {
    ctx.addIssue({
      code: 'custom',
      path: ['playground'],
      message: 'PLAYGROUND=1 is refused with PUBLIC_HOST set: anyone who reaches the server could talk to the agent. Use PLAYGROUND=force to serve it anyway',
    });
  }
  if (config.store === 'memory' && config.workers > 1) {
    // Each worker would have its own memory: calls could not move between workers, and with signatures
    // on a call token issued by one worker could not be redeemed by another.
    ctx.addIssue({ code: 'custom', path: ['workers'], message: 'WORKERS > 1 needs a shared store (STORE=sqlite or redis): the memory store is per process' });
  }
  // Checked only when used, so a stray REDIS_URL does not stop a SQLite deployment.
  if (config.store !== 'redis') return;
  try {
    parseRedisUrl(config.redisUrl);
  } catch (err) {
    ctx.addIssue({ code: 'custom', path: ['redisUrl'], message: err instanceof Error ? err.message : String(err) });
  }
});

export type Config = z.infer<typeof configSchema>;

/**
 * Validates settings (numbers as numbers or numeric text, as the environment gives them; unset means
 * the default) and fills in the defaults; a problem throws one readable error naming every bad setting.
 */
export function parseConfig(input: Record<string, unknown>): Config {
  const result = configSchema.safeParse(input);
  // One readable line per problem at start-up instead of a JSON dump of zod issues.
  if (!result.success) throw new Error(`invalid configuration:\n${z.prettifyError(result.error)}`);
  return result.data;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<Config> = {}): Config {
  const config = parseConfig({
    port: env.PORT,
    host: env.HOST,
    publicHost: env.PUBLIC_HOST,
    twilioAuthToken: env.TWILIO_AUTH_TOKEN,
    validateSignatures: env.VALIDATE_SIGNATURES,
    actionUrlOverrides: env.ACTION_URL_OVERRIDES,
    openaiApiKey: env.OPENAI_API_KEY,
    openaiBaseUrl: env.OPENAI_BASE_URL,
    openaiModel: env.OPENAI_MODEL,
    openaiTimeoutMs: env.OPENAI_TIMEOUT_MS,
    store: env.STORE,
    sqlitePath: env.SQLITE_PATH,
    redisUrl: env.REDIS_URL,
    redisPrefix: env.REDIS_PREFIX,
    storeTimeoutMs: env.STORE_TIMEOUT_MS,
    storeProbeMs: env.STORE_PROBE_MS,
    storeSweepMs: env.STORE_SWEEP_MS || undefined,
    dtmfIdleMs: env.DTMF_IDLE_MS,
    graceMs: env.GRACE_MS,
    retentionMs: env.RETENTION_MS,
    maxResumes: env.MAX_RESUMES,
    callTokenTtlMs: env.CALL_TOKEN_TTL_MS,
    drainTimeoutMs: env.DRAIN_TIMEOUT_MS,
    sessionHibernateMs: env.SESSION_HIBERNATE_MS,
    workers: env.WORKERS,
    welcomeGreeting: env.WELCOME_GREETING,
    language: env.LANGUAGE,
    adminToken: env.ADMIN_TOKEN || undefined,
    handoffNumber: env.HANDOFF_NUMBER || undefined,
    inspect: env.INSPECT,
    playground: env.PLAYGROUND,
    inspectPort: env.INSPECT_PORT,
    logLevel: env.LOG_LEVEL,
    instanceId: env.INSTANCE_ID,
    snapshotKey: env.SNAPSHOT_KEY,
    snapshotKeys: env.SNAPSHOT_KEYS,
    maxPromptBytes: env.MAX_PROMPT_BYTES,
    historyMaxTurns: env.HISTORY_MAX_TURNS,
    historyMaxBytes: env.HISTORY_MAX_BYTES,
    maxSendBufferBytes: env.MAX_SEND_BUFFER_BYTES,
    maxQueuedFrames: env.MAX_QUEUED_FRAMES,
    setupTimeoutMs: env.SETUP_TIMEOUT_MS,
    maxSessions: env.MAX_SESSIONS,
  });
  return { ...config, ...overrides };
}
