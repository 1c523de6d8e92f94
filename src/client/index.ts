// relay-actors/client: a ConversationRelay client that reconnects by itself, for browsers and Node.
// Browser-safe: nothing here imports a Node module.
export {
  ConversationRelayClient,
  CLIENT_DROP_CODE,
  type ClientEvents,
  type ClientOptions,
  type ClientState,
  type WebSocketConstructor,
  type WebSocketLike,
} from './relay-client.js';
export { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';
