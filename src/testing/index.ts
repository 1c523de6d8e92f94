// relay-actors/testing: test an agent offline. A scriptable fake OpenAI-compatible server (point the
// server's OPENAI_BASE_URL at it) and a simulated Twilio ConversationRelay call (the webhooks and the
// socket, as Twilio sends them). No test-framework imports: use them from vitest, node:test or a script.
// Nothing under src/ but this folder and the `npm run call` CLI imports these modules.

// The fake LLM: scripted turns in, real SSE out, every request recorded.
export {
  startFakeOpenAI,
  echoScript,
  lastUserText,
  contentToText,
  splitIntoChunks,
  type FakeOpenAI,
  type FakeOpenAIOptions,
  type Script,
  type Turn,
  type ScriptedTurn,
  type ToolCallTurn,
  type ScriptFn,
  type ScriptReply,
  type ScriptRequest,
  type ChatRequestRecord,
  type ChatMessageIn,
} from './fake-openai-server.js';

// The caller: a whole incoming call as Twilio places it, or just its socket.
export { placeTwilioCall, type PlaceCallOptions, type PlacedCall } from './twilio-call.js';
export {
  SimulatedCall,
  twilioCallOptions,
  twilioReconnectOptions,
  UpgradeRejectedError,
  TEST_ACCOUNT_SID,
  DEFAULT_WAIT_MS,
  type SimulatedCallOptions,
  type TwimlSocketOptions,
  type SetupFrame,
  type AgentReply,
  type TranscriptEntry,
  type WaitOptions,
  type CloseInfo,
} from './twilio-sim.js';

// Twilio's webhooks (incoming call, <Connect action> callback), signed as Twilio signs them.
export {
  postIncomingCall,
  postAction,
  postTwilioForm,
  signTwilioRequest,
  signWebSocketUrl,
  WebhookHttpError,
  type IncomingCallParams,
  type ActionParams,
  type ActionOptions,
  type WebhookOptions,
  type WebhookResponse,
  type FormParams,
} from './twilio-webhooks.js';
export { readRelayTwiml, type RelayTwiml } from './twiml-reader.js';

// The frames a call receives (`call.messages`, `call.waitFor`).
export type { OutboundMessage, TextMessage } from '../protocol/messages.js';
