// A local stand-in for the OpenAI Chat Completions API, built on node:http only.
// It speaks the real wire format (SSE chunks, tool-call deltas split by index, error bodies),
// so the real `openai` SDK can be pointed at it through `baseURL`.
//
// What it answers is a script: either a list of turns, each answering one chat-completions request in
// order (`script: [{ reply: 'Hi' }, { toolCall: { name: 'lookup', arguments: { id: 42 } } }]`), or one
// function answering every request with a low-level `ScriptReply` (exact chunks, holds, headers).
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';

export interface ChatMessageIn {
  role: string;
  content: unknown;
  tool_calls?: unknown;
  tool_call_id?: string;
  name?: string;
}

export interface ScriptRequest {
  messages: ChatMessageIn[];
  tools?: unknown[];
  model: string;
  stream: boolean;
  /** The whole parsed request body, for anything not surfaced above. */
  body: Record<string, unknown>;
}

/** A low-level answer: what a `ScriptFn` returns (a scripted turn is turned into one of these). */
export interface ScriptReply {
  /** Assistant text; split into word-sized chunks unless `chunks` is given. */
  text?: string;
  /** Exact content deltas to stream (takes precedence over `text`). */
  chunks?: string[];
  /** Tool calls; each is streamed as a head chunk (id/type/name) then argument pieces. */
  toolCalls?: Array<{ name: string; arguments: string; id?: string }>;
  /** Delay before every chunk after the first (defaults to the server's chunkDelayMs). */
  delayMs?: number;
  /** Delay before the first chunk (headers are sent right away for streams). */
  firstChunkDelayMs?: number;
  /**
   * Streams only this many content chunks, then waits for `until` before the rest: a test cuts a
   * reply mid-stream at a point it chooses instead of racing the chunk delays.
   */
  holdAfter?: { chunks: number; until: Promise<unknown> };
  /** Error status (e.g. 500, 429): answered with an OpenAI-style error body instead. */
  status?: number;
  /** Error message for `status`. */
  errorMessage?: string;
  /** Error `code` for `status` (default: OpenAI's for 401 and 429, else null). */
  errorCode?: string;
  /** Extra response headers (e.g. `retry-after-ms` for retry tests). */
  headers?: Record<string, string>;
}

export type ScriptFn = (req: ScriptRequest) => ScriptReply | Promise<ScriptReply>;

/** One tool call the model makes. */
export interface ToolCallTurn {
  name: string;
  /** An object (sent as its JSON) or the raw JSON string, which may be invalid on purpose. Default `{}`. */
  arguments?: Record<string, unknown> | string;
  /** The tool call's id; a random `call_…` id by default. */
  id?: string;
}

/**
 * One scripted answer to one chat-completions request: text (`reply`), tool calls (`toolCall`,
 * `toolCalls`; with a `reply` too, the text streams first, as OpenAI sends it), or an `error`.
 */
export interface ScriptedTurn {
  /** Assistant text, streamed word by word; or a function of the request that returns it. */
  reply?: string | ((req: ScriptRequest) => string | Promise<string>);
  toolCall?: ToolCallTurn;
  toolCalls?: ToolCallTurn[];
  /**
   * Answer with this HTTP status (400 or more) and an OpenAI-style error body instead. The SDK retries
   * 408, 409, 429 and 5xx by itself, and each retry is a new request that takes the next turn; a
   * `headers` entry `'x-should-retry': 'false'` stops that.
   */
  error?: number | { status: number; message?: string; headers?: Record<string, string> };
  /** Delay before every chunk after the first (default: the server's `chunkDelayMs`). */
  delayMs?: number;
  /** Delay before the first chunk. */
  firstChunkDelayMs?: number;
}

/** A turn of a script: a fixed answer, or a function of the request that returns one. */
export type Turn = ScriptedTurn | ((req: ScriptRequest) => ScriptedTurn | Promise<ScriptedTurn>);

/** Turns answering one request each, in order; or one function answering every request. */
export type Script = readonly Turn[] | ScriptFn;

export interface ChatRequestRecord {
  /** Parsed request body exactly as the client sent it. */
  body: Record<string, unknown>;
  messages: ChatMessageIn[];
  tools?: unknown[];
  model: string;
  stream: boolean;
  headers: http.IncomingHttpHeaders;
  /** HTTP status answered. */
  status: number;
  /** True when the client went away before the response finished. */
  aborted: boolean;
  /** True once the full response was written. */
  completed: boolean;
  /** Number of SSE data chunks written (excluding [DONE]). */
  chunksSent: number;
  startedAt: number;
  endedAt?: number;
}

export interface FakeOpenAI {
  baseURL: string;
  port: number;
  /** Every chat-completions request received, in order (bodies as sent: messages, tools, model). */
  requests: ChatRequestRecord[];
  /** Replaces the script; a list of turns starts again at its first turn. */
  setScript(script: Script): void;
  /** Resolves once every request being handled now has been answered or given up (its client gone). */
  idle(): Promise<void>;
  close(): Promise<void>;
}

export interface FakeOpenAIOptions {
  port?: number;
  /** Default: `echoScript` ("You said: …" to every request). */
  script?: Script;
  /**
   * Answers every request after a list of turns ran out. Without it such a request gets HTTP 500
   * (`code: 'script_exhausted'`, a message naming the request) marked not to be retried, so the
   * client fails at once with an `APIError` instead of retrying into more of the same.
   */
  fallback?: Turn;
  /** Delay between streamed chunks (default 0). */
  chunkDelayMs?: number;
  /**
   * Accept queue of the listening socket (node's default 511; Linux caps it at net.core.somaxconn).
   * Raise it when more clients than that connect at once: the kernel drops what overflows, and those
   * requests wait for TCP's SYN retries (1 s, 3 s, 7 s...).
   */
  backlog?: number;
}

/** "You said: <last user message>", streamed word by word. */
export const echoScript: ScriptFn = (req) => ({ text: `You said: ${lastUserText(req)}` });

/** The text of the last user message of a request (a `ScriptRequest` or a recorded one); '' if none. */
export function lastUserText(req: { messages: readonly ChatMessageIn[] }): string {
  return contentToText(req.messages.filter((m) => m.role === 'user').at(-1)?.content);
}

/** Flattens a chat message content (string or array of parts) to plain text. */
export function contentToText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((p) => (p && typeof p === 'object' && 'text' in p && typeof p.text === 'string' ? p.text : ''))
      .join('');
  }
  return '';
}

/** Splits text into word-sized pieces that concatenate back to the input exactly. */
export function splitIntoChunks(text: string): string[] {
  if (text === '') return [];
  // Like model tokens: leading whitespace stays with the word (" world"); trailing whitespace last.
  return text.match(/\s*\S+|\s+$/g) ?? [text];
}

function splitArguments(args: string): string[] {
  const pieces: string[] = [];
  for (let i = 0; i < args.length; i += 12) pieces.push(args.slice(i, i + 12));
  return pieces;
}

const randomId = (prefix: string, bytes = 12) => prefix + randomBytes(bytes).toString('base64url');
const roughTokens = (s: string) => Math.max(1, Math.ceil(s.length / 4));

/** Checks a turn's shape, so that a malformed turn fails where it was written. */
function checkTurn(turn: ScriptedTurn, where: string): void {
  if (!turn || typeof turn !== 'object') throw new Error(`${where}: expected a turn object, got ${String(turn)}`);
  const answers = turn.reply !== undefined || turn.toolCall !== undefined || (turn.toolCalls?.length ?? 0) > 0;
  if (turn.error === undefined) {
    if (!answers) throw new Error(`${where}: a turn needs reply, toolCall, toolCalls or error`);
    return;
  }
  const status = typeof turn.error === 'number' ? turn.error : turn.error.status;
  if (!Number.isInteger(status) || status < 400 || status > 599) throw new Error(`${where}: error status must be 400-599, got ${status}`);
  if (answers) throw new Error(`${where}: an error turn cannot also reply or call tools`);
}

async function answerTurn(turn: Turn, req: ScriptRequest, where: string): Promise<ScriptReply> {
  const t = typeof turn === 'function' ? await turn(req) : turn;
  checkTurn(t, where);
  const timing: Pick<ScriptReply, 'delayMs' | 'firstChunkDelayMs'> = {
    ...(t.delayMs !== undefined ? { delayMs: t.delayMs } : {}),
    ...(t.firstChunkDelayMs !== undefined ? { firstChunkDelayMs: t.firstChunkDelayMs } : {}),
  };
  if (t.error !== undefined) {
    const e = typeof t.error === 'number' ? { status: t.error } : t.error;
    return { status: e.status, errorMessage: e.message, headers: e.headers, ...timing };
  }
  const text = typeof t.reply === 'function' ? await t.reply(req) : t.reply;
  const toolCalls = [...(t.toolCall ? [t.toolCall] : []), ...(t.toolCalls ?? [])].map(({ name, arguments: args, id }) => ({
    name,
    arguments: typeof args === 'string' ? args : JSON.stringify(args ?? {}),
    ...(id !== undefined ? { id } : {}),
  }));
  return { text, toolCalls, ...timing };
}

/** A list of turns as one ScriptFn: turn n answers the n-th request, then the fallback or a 500. */
function toScriptFn(script: Script, fallback: Turn | undefined): ScriptFn {
  if (typeof script === 'function') return script;
  const turns = [...script];
  turns.forEach((t, i) => typeof t !== 'function' && checkTurn(t, `script turn ${i + 1}`));
  if (fallback !== undefined && typeof fallback !== 'function') checkTurn(fallback, 'fallback turn');
  let next = 0;
  return (req) => {
    const n = ++next;
    const turn = turns[n - 1];
    if (turn !== undefined) return answerTurn(turn, req, `script turn ${n}`);
    if (fallback !== undefined) return answerTurn(fallback, req, 'fallback turn');
    return {
      status: 500,
      errorCode: 'script_exhausted',
      errorMessage: `fake OpenAI: the script ran out: request ${n} has no turn (${turns.length} scripted); script more turns or pass a fallback`,
      // The SDK would retry a 500 twice, into the same answer.
      headers: { 'x-should-retry': 'false' },
    };
  };
}

export async function startFakeOpenAI(opts: FakeOpenAIOptions = {}): Promise<FakeOpenAI> {
  let script: ScriptFn = toScriptFn(opts.script ?? echoScript, opts.fallback);
  const defaultDelay = opts.chunkDelayMs ?? 0;
  const requests: ChatRequestRecord[] = [];

  const handling = new Set<Promise<void>>();
  const server = http.createServer((req, res) => {
    const handled = handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) {
        // A script that throws (or a malformed turn) is a bug in the test: retrying cannot help.
        res.setHeader('x-should-retry', 'false');
        sendError(res, 500, `fake-openai internal error: ${(err as Error).message}`);
      } else {
        res.destroy();
      }
    });
    handling.add(handled);
    void handled.finally(() => handling.delete(handled));
  });
  server.keepAliveTimeout = 5_000;

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    res.setHeader('x-request-id', randomId('req_', 16));
    const url = new URL(req.url ?? '/', 'http://localhost');
    const raw = await readBody(req);

    if (req.method !== 'POST' || !/^(\/v1)?\/chat\/completions\/?$/.test(url.pathname)) {
      sendError(res, 404, `Unknown request URL: ${req.method} ${url.pathname}.`, 'invalid_request_error', 'unknown_url');
      return;
    }

    let body: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(raw);
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('body is not an object');
      body = parsed as Record<string, unknown>;
    } catch (err) {
      sendError(res, 400, `We could not parse the JSON body of your request. (${(err as Error).message})`);
      return;
    }

    const messages = Array.isArray(body.messages) ? (body.messages as ChatMessageIn[]) : [];
    const tools = Array.isArray(body.tools) ? (body.tools as unknown[]) : undefined;
    const model = typeof body.model === 'string' ? body.model : '';
    const stream = body.stream === true;
    const record: ChatRequestRecord = {
      body,
      messages,
      ...(tools ? { tools } : {}),
      model,
      stream,
      headers: req.headers,
      status: 200,
      aborted: false,
      completed: false,
      chunksSent: 0,
      startedAt: Date.now(),
    };
    requests.push(record);

    if (!Array.isArray(body.messages) || model === '') {
      record.status = 400;
      sendError(res, 400, !model ? "Missing required parameter: 'model'." : "Missing required parameter: 'messages'.");
      record.completed = true;
      record.endedAt = Date.now();
      return;
    }

    // Client disconnects (AbortController, socket drop) end up here before the response finished.
    let gone = false;
    res.on('close', () => {
      if (!res.writableFinished) {
        gone = true;
        record.aborted = true;
        record.endedAt ??= Date.now();
      }
    });

    const reply = await script({ messages, ...(tools ? { tools } : {}), model, stream, body });
    for (const [k, v] of Object.entries(reply.headers ?? {})) res.setHeader(k, v);

    if (reply.status !== undefined && reply.status >= 400) {
      record.status = reply.status;
      if (reply.firstChunkDelayMs) await sleep(reply.firstChunkDelayMs);
      if (gone) return;
      sendErrorForStatus(res, reply.status, reply.errorMessage, reply.errorCode);
      record.completed = true;
      record.endedAt = Date.now();
      return;
    }

    const id = randomId('chatcmpl-');
    const created = Math.floor(Date.now() / 1000);
    const content = reply.chunks ?? splitIntoChunks(reply.text ?? '');
    const fullText = content.join('');
    const toolCalls = (reply.toolCalls ?? []).map((tc) => ({ ...tc, id: tc.id ?? randomId('call_') }));
    const finishReason = toolCalls.length > 0 ? 'tool_calls' : 'stop';
    const usage = {
      prompt_tokens: roughTokens(JSON.stringify(messages)),
      completion_tokens: roughTokens(fullText + toolCalls.map((t) => t.name + t.arguments).join('')),
      total_tokens: 0,
    };
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
    const delay = reply.delayMs ?? defaultDelay;

    if (!stream) {
      if (reply.firstChunkDelayMs) await sleep(reply.firstChunkDelayMs);
      if (gone) return;
      const message: Record<string, unknown> = {
        role: 'assistant',
        content: toolCalls.length > 0 && fullText === '' ? null : fullText,
        refusal: null,
        annotations: [],
      };
      if (toolCalls.length > 0) {
        message.tool_calls = toolCalls.map((tc) => ({
          id: tc.id,
          type: 'function',
          function: { name: tc.name, arguments: tc.arguments },
        }));
      }
      const payload = {
        id,
        object: 'chat.completion',
        created,
        model,
        choices: [{ index: 0, message, logprobs: null, finish_reason: finishReason }],
        usage,
        service_tier: 'default',
        system_fingerprint: 'fp_fake',
      };
      const json = JSON.stringify(payload);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) });
      res.end(json);
      record.completed = true;
      record.endedAt = Date.now();
      return;
    }

    // ---- streaming ----
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
    });
    res.flushHeaders();

    const base = { id, object: 'chat.completion.chunk', created, model, service_tier: 'default', system_fingerprint: 'fp_fake' };
    const deltas: Array<Record<string, unknown>> = [];
    // OpenAI opens with a role delta: content "" for text replies; a tool-only reply carries the first
    // tool-call head in that same delta with content null.
    if (content.length > 0 || toolCalls.length === 0) {
      deltas.push({ role: 'assistant', content: '', refusal: null });
      for (const piece of content) deltas.push({ content: piece });
    }
    toolCalls.forEach((tc, index) => {
      const head = { tool_calls: [{ index, id: tc.id, type: 'function', function: { name: tc.name, arguments: '' } }] };
      deltas.push(deltas.length === 0 ? { role: 'assistant', content: null, ...head, refusal: null } : head);
      for (const piece of splitArguments(tc.arguments)) {
        deltas.push({ tool_calls: [{ index, function: { arguments: piece } }] });
      }
    });

    const write = (obj: unknown): boolean => {
      if (gone || res.destroyed) return false;
      res.write(`data: ${JSON.stringify(obj)}\n\n`);
      return true;
    };

    for (let i = 0; i < deltas.length; i++) {
      // deltas[0] is the role delta; content chunk n is deltas[n].
      if (reply.holdAfter && content.length > 0 && i === reply.holdAfter.chunks + 1) await reply.holdAfter.until;
      const wait = i === 0 ? (reply.firstChunkDelayMs ?? 0) : delay;
      if (wait > 0) await sleep(wait);
      if (!write({ ...base, choices: [{ index: 0, delta: deltas[i], logprobs: null, finish_reason: null }] })) return;
      record.chunksSent++;
    }
    if (delay > 0) await sleep(delay);
    if (!write({ ...base, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: finishReason }] })) return;
    record.chunksSent++;
    const streamOptions = body.stream_options as { include_usage?: boolean } | undefined;
    if (streamOptions?.include_usage) {
      if (!write({ ...base, choices: [], usage })) return;
      record.chunksSent++;
    }
    if (gone) return;
    res.end('data: [DONE]\n\n');
    record.completed = true;
    record.endedAt = Date.now();
  }

  // Timers are tracked so close() does not leave a pending sleep behind.
  const timers = new Set<NodeJS.Timeout>();
  function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        timers.delete(t);
        resolve();
      }, ms);
      timers.add(t);
    });
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: opts.port ?? 0, host: '127.0.0.1', ...(opts.backlog === undefined ? {} : { backlog: opts.backlog }) }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;

  return {
    baseURL: `http://127.0.0.1:${port}/v1`,
    port,
    requests,
    setScript(next: Script) {
      script = toScriptFn(next, opts.fallback);
    },
    async idle() {
      await Promise.all([...handling]);
    },
    close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    req.on('error', reject);
  });
}

function sendError(
  res: http.ServerResponse,
  status: number,
  message: string,
  type = 'invalid_request_error',
  code: string | null = null,
): void {
  const json = JSON.stringify({ error: { message, type, param: null, code } });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) });
  res.end(json);
}

function sendErrorForStatus(res: http.ServerResponse, status: number, message?: string, code?: string): void {
  if (status === 429) {
    sendError(res, 429, message ?? 'Rate limit reached for requests. Please try again later.', 'requests', code ?? 'rate_limit_exceeded');
  } else if (status === 401) {
    sendError(res, 401, message ?? 'Incorrect API key provided.', 'invalid_request_error', code ?? 'invalid_api_key');
  } else if (status >= 500) {
    sendError(res, status, message ?? 'The server had an error while processing your request. Sorry about that!', 'server_error', code);
  } else {
    sendError(res, status, message ?? `Request failed with status ${status}.`, 'invalid_request_error', code);
  }
}
