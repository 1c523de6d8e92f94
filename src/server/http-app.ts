// HTTP routes (Hono): TwiML for incoming calls, the <Connect action> callback, health, metrics, admin views.
import type { ResolvedAgent } from '../agent/agent.js';
import { Hono, type Context } from 'hono';
import { bearerAuth } from 'hono/bearer-auth';
import { HTTPException } from 'hono/http-exception';
import type { Config } from '../config.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import type { SessionManager } from './session-manager.js';
import type { SnapshotStore } from '../stores/types.js';
import { conversationRelayTwiml, dialTwiml, hangupTwiml } from './twiml.js';
import { isValidTwilioSignature } from './signature.js';
import { withOverrides } from './connection-overrides.js';
import { redactSession } from './redact.js';
import { serviceUnavailableLine } from '../machines/phrases.js';
import { isServiceUnavailableHandoff } from './service-unavailable.js';
import type { StoreStatus } from './store-health.js';
import { hashSecret, newProofToken, relayTicket } from './resume-proof.js';
import { CALL_SID_PATTERN } from '../protocol/messages.js';
import { addPlaygroundRoutes } from './playground.js';

export interface HttpAppDeps {
  config: Config;
  /** Languages and greeting of the TwiML. */
  agent: Pick<ResolvedAgent, 'language' | 'languages' | 'welcomeGreeting'>;
  manager: SessionManager;
  store: SnapshotStore;
  logger: Logger;
  metrics: Metrics;
  /** True once a drain began (SIGTERM): not ready. */
  isDraining: () => boolean;
  /**
   * True while draining with the listener still open (behind a balancer): new work is answered 503 so
   * the balancer takes it elsewhere. A cluster worker stops listening instead and serves what it accepted.
   */
  refusesNewWork: () => boolean;
  /** Whether the store can be written (latest probe); unset: always ready. */
  storeStatus?: () => StoreStatus;
}

export interface PublicOrigin {
  publicHost: string;
  secure: boolean;
}

/** Where Twilio reaches us: PUBLIC_HOST (always TLS) or, for local runs, the request's own Host. */
export function publicOrigin(config: Config, hostHeader: string | undefined, forwardedProto: string | undefined): PublicOrigin {
  if (config.publicHost) return { publicHost: config.publicHost, secure: true };
  return { publicHost: hostHeader ?? `127.0.0.1:${config.port}`, secure: forwardedProto === 'https' };
}

export function signaturesRequired(config: Config): config is Config & { twilioAuthToken: string } {
  if (config.validateSignatures === 'false') return false;
  if (config.validateSignatures === 'true' && !config.twilioAuthToken) {
    throw new Error('VALIDATE_SIGNATURES=true needs TWILIO_AUTH_TOKEN');
  }
  return Boolean(config.twilioAuthToken);
}

/**
 * Secure by default: a server Twilio can reach (PUBLIC_HOST) must be able to tell Twilio's requests
 * from anyone else's. Without TWILIO_AUTH_TOKEN it refuses to start, unless VALIDATE_SIGNATURES=false
 * says so explicitly; then it returns the warning to log.
 */
export function signaturePolicyWarning(config: Config): string | undefined {
  signaturesRequired(config); // VALIDATE_SIGNATURES=true without a token is refused there
  if (!config.publicHost || config.twilioAuthToken) return undefined;
  if (config.validateSignatures !== 'false') {
    throw new Error(
      'PUBLIC_HOST is set but TWILIO_AUTH_TOKEN is not: anyone could post /twiml and /action and open /relay sockets ' +
        'for any callSid. Set TWILIO_AUTH_TOKEN, or VALIDATE_SIGNATURES=false to run unprotected on purpose.',
    );
  }
  return (
    'VALIDATE_SIGNATURES=false on a public host: requests are not checked to come from Twilio, so anyone who learns ' +
    'a callSid can end its call or, while it waits to reconnect, take it over; and anyone can open calls that spend LLM money'
  );
}

const errorMessage = (err: unknown) => (err instanceof Error ? err.message : String(err));

const xml = (c: Context, body: string) => c.body(body, 200, { 'Content-Type': 'text/xml' });

/** A stopping instance sends new work elsewhere: balancers retry a 503, and so does Twilio with retry overrides. */
const draining = (c: Context) => c.text('draining: this instance is restarting', 503, { 'Retry-After': '1' });

export function createHttpApp(deps: HttpAppDeps): Hono {
  const { config, manager, logger, metrics } = deps;
  const app = new Hono();
  const storeStatus = deps.storeStatus ?? ((): StoreStatus => ({ ready: true }));
  /** Spoken by Twilio, then the call ends: nothing can be started or resumed without the store. */
  const apology = (c: Context) => xml(c, hangupTwiml(serviceUnavailableLine(deps.agent.language)));

  /**
   * Reads the form body once and checks X-Twilio-Signature when signatures are required.
   * `fragment`: the connection overrides we wrote on this route's URL in TwiML (see below).
   */
  const twilioForm = async (
    c: Context,
    fragment = '',
  ): Promise<{ origin: PublicOrigin; form: Record<string, string> } | Response> => {
    const origin = publicOrigin(config, c.req.header('host'), c.req.header('x-forwarded-proto'));
    const body = await c.req.parseBody().catch(() => ({}));
    const form: Record<string, string> = {};
    for (const [k, v] of Object.entries(body)) if (typeof v === 'string') form[k] = v;
    if (signaturesRequired(config)) {
      // Twilio signs the full configured URL, query string included.
      const requested = new URL(c.req.url);
      const url = `${origin.secure ? 'https' : 'http'}://${origin.publicHost}${requested.pathname}${requested.search}`;
      // The request never carries the fragment, but Twilio signs "the exact URL your application
      // supplied" (twilio.com/docs/usage/webhooks/webhooks-security), and neither that page nor
      // twilio.com/docs/usage/webhooks/webhooks-connection-overrides says whether the overrides
      // fragment is part of it (a third-party guide, fasthook.io/twilio-webhooks, says it is not);
      // twilio-node's validateRequest signs a fragment when given one. So we accept the URL with our
      // configured fragment and without it: both need the auth token.
      const candidates = fragment ? [withOverrides(url, fragment), url] : [url];
      const signature = c.req.header('x-twilio-signature');
      if (!candidates.some((u) => isValidTwilioSignature(config.twilioAuthToken, signature, u, form))) {
        logger.warn({ path: c.req.path }, 'webhook with an invalid Twilio signature rejected');
        return c.text('invalid signature', 403);
      }
    }
    return { origin, form };
  };

  app.post('/twiml', async (c) => {
    if (deps.refusesNewWork()) return draining(c);
    const parsed = await twilioForm(c);
    if (parsed instanceof Response) return parsed;
    const log = logger.child({ callSid: parsed.form.CallSid });
    if (!storeStatus().ready) {
      log.warn('incoming call turned away: the store cannot be written');
      return apology(c);
    }
    const admission = signaturesRequired(config) ? await admitCall(parsed.form.CallSid, log) : {};
    if (admission instanceof Response) return admission;
    log.info('incoming call');
    return xml(
      c,
      conversationRelayTwiml({
        ...parsed.origin,
        language: deps.agent.language,
        languages: deps.agent.languages,
        welcomeGreeting: deps.agent.welcomeGreeting(deps.agent.language),
        actionOverrides: config.actionUrlOverrides,
        ...admission,
      }),
    );

    /**
     * With signatures on, a new call's socket must bring a single-use callToken issued here (kept, as
     * a hash, in the store so any instance can redeem it), on the relay path bound to that token.
     */
    async function admitCall(callSid: string | undefined, log: Logger): Promise<Response | { parameters: Record<string, string>; ticket: string }> {
      if (!callSid || !CALL_SID_PATTERN.test(callSid)) return c.text('a valid CallSid is required', 400);
      const callToken = newProofToken();
      const now = manager.clock.now();
      let issued: boolean;
      try {
        issued = await deps.store.issueCallToken(callSid, {
          hash: hashSecret(callToken),
          expiresAt: now + config.callTokenTtlMs,
          keepUntil: now + Math.max(config.retentionMs, config.callTokenTtlMs),
        });
      } catch (err) {
        log.error({ err: errorMessage(err) }, 'incoming call turned away: its call token could not be stored');
        return apology(c);
      }
      if (!issued) {
        // Twilio asks for a call's TwiML once; this call already connected, so this is a replay.
        log.warn('incoming-call webhook for a call that already connected: refused');
        return c.text('this call already connected', 409);
      }
      return { parameters: { callToken }, ticket: relayTicket(callToken) };
    }
  });

  app.post('/action', async (c) => {
    const parsed = await twilioForm(c, config.actionUrlOverrides);
    if (parsed instanceof Response) return parsed;
    const { form, origin } = parsed;
    if (!form.CallSid || !CALL_SID_PATTERN.test(form.CallSid)) return c.text('a valid CallSid is required', 400);
    // Calls still held here are answered to the very end; any other belongs to a live instance.
    if (deps.refusesNewWork() && !manager.get(form.CallSid)) return draining(c);
    const action = manager.handleAction({
      callSid: form.CallSid,
      callStatus: form.CallStatus ?? '',
      sessionStatus: form.SessionStatus ?? '',
      errorCode: form.ErrorCode ?? '',
      sessionId: form.SessionId,
    });
    const log = logger.child({ callSid: form.CallSid });
    if (isServiceUnavailableHandoff(form.HandoffData)) {
      // We ended this call because its session could not be had: apologise now, without waiting for
      // the store; a session that came up too late is ended by the callback in the background.
      action.catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'action callback not applied: store unavailable'));
      return apology(c);
    }
    let outcome;
    try {
      outcome = await action;
    } catch (err) {
      // The store failed or timed out: the call cannot be resumed, so it ends politely.
      log.error({ err: errorMessage(err) }, 'action callback failed: ending the call with an apology');
      return apology(c);
    }
    // Twilio may post this callback again (connection overrides); a session already in grace answers
    // reconnect TwiML again, with one more token (the earlier ones stay valid).
    // The new socket's setup must bring this token back (Twilio puts every <Parameter> in customParameters),
    // on the relay path of its ticket, which only Twilio can sign.
    if (outcome.kind === 'reconnect') {
      return xml(
        c,
        conversationRelayTwiml({
          ...origin,
          language: deps.agent.language,
          languages: deps.agent.languages,
          actionOverrides: config.actionUrlOverrides,
          parameters: { resumeToken: outcome.resumeToken },
          ticket: relayTicket(outcome.resumeToken),
        }),
      );
    }
    if (outcome.kind === 'hangup') return xml(c, hangupTwiml('Sorry, we could not reconnect your call. Goodbye.'));
    if (outcome.kind === 'retry') return c.text('the session could not be stored: retry', 503, { 'Retry-After': '1' });
    // We sent `end` for a handoff: connect the caller to the configured human agent line.
    if (form.SessionStatus === 'ended' && form.HandoffData && config.handoffNumber) {
      log.info('handing the call off to the agent line');
      return xml(c, dialTwiml(config.handoffNumber));
    }
    return xml(c, hangupTwiml());
  });

  app.get('/healthz', (c) =>
    c.json({ ok: true, store: deps.store.kind, instance: config.instanceId, sessions: manager.size }),
  );

  // Readiness, not liveness: false from the first moment of a drain so the balancer stops sending calls,
  // and while the store cannot be written (no call could be started or resumed here).
  app.get('/readyz', (c) => {
    if (deps.isDraining()) return c.json({ ready: false, reason: 'draining' }, 503);
    const store = storeStatus();
    if (!store.ready) return c.json({ ready: false, reason: 'store unavailable', store: deps.store.kind, error: store.error }, 503);
    return c.json({ ready: true });
  });

  app.get('/metrics', async (c) => c.body(await metrics.registry.metrics(), 200, { 'Content-Type': metrics.registry.contentType }));

  // Admin views: off unless ADMIN_TOKEN is set; context is redacted (no digits, masked numbers).
  // The token is compared in constant time (bearerAuth hashes both sides and compares the digests).
  const adminToken = config.adminToken;
  if (adminToken) {
    // A malformed Authorization header is answered like a wrong token (401), not bearerAuth's 400.
    const unauthorized = (c: Context) => c.text('unauthorized', 401);
    app.use('/sessions/*', bearerAuth({ token: adminToken, invalidAuthenticationHeader: { message: unauthorized } }));
  } else {
    app.use('/sessions/*', async (c) => c.text('admin views are disabled: set ADMIN_TOKEN', 404));
  }
  // Looked at, not revived: an admin polling the list keeps no call's actor running.
  app.get('/sessions', (c) => c.json(manager.all().flatMap((s) => { const view = s.peek(); return view ? [redactSession(view)] : []; })));
  app.get('/sessions/:callSid', (c) => {
    const session = manager.get(c.req.param('callSid'));
    const view = session?.peek();
    return view ? c.json(redactSession(view)) : c.text('no such live session', 404);
  });

  if (config.playground !== '0') addPlaygroundRoutes(app, manager);

  app.onError((err, c) => {
    if (err instanceof HTTPException) return err.getResponse(); // e.g. bearerAuth's 401
    logger.error({ err, path: c.req.path }, 'request failed');
    return c.text('internal error', 500);
  });
  return app;
}
