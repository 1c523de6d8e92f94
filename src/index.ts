// relay-actors: the package entry. Define an agent (instructions, tools, languages, keypad entries)
// and serve it with createRelayServer. The testing kit is `relay-actors/testing` (src/testing), never
// imported from here: what runs in production does not load it.
export { createRelayServer, type RelayServer, type RelayServerOptions, type AdvancedSettings, type LogLevel } from './server/relay-server.js';
export { defineAgent, type AgentDefinition, type AgentLanguage } from './agent/agent.js';
export { defineTool, type Tool, type ToolContext } from './agent/tool.js';
export type { KeypadEntry } from './agent/keypad-entry.js';
export type { CallInfo } from './machines/reply.js';
