// The agent: what the model is told, which tools it has, which languages it speaks and which
// keypad entries it may ask for. Everything optional; the defaults are the built-in demo agent.
import { BUILT_IN_KEYPAD_SPECS, DEFAULT_LANGUAGE_MENU, languageMenuSpec, type KeypadSpecs } from '../machines/dtmf/index.js';
import type { CallInfo } from '../machines/reply.js';
import { BUILT_IN_KEYPAD_ENTRIES, collectDigitsTool, handoffTool, switchLanguageTool } from './builtin-tools.js';
import { keypadEntrySpec, type KeypadEntry } from './keypad-entry.js';
import { toolSchema, type AnyTool, type Tool } from './tool.js';

export interface AgentLanguage {
  /** BCP-47 code, e.g. 'fr-FR': the ConversationRelay `<Language code>`, for speech and recognition. */
  code: string;
  /** Twilio's text-to-speech provider and voice for it, e.g. 'Google' and 'fr-FR-Journey-F'. */
  ttsProvider?: string;
  voice?: string;
  /** Speech recognition for it, e.g. 'Deepgram' and 'nova-3-general'. */
  transcriptionProvider?: string;
  speechModel?: string;
  /** The language menu's line offering it, with `{digit}` for its key: 'Pour le français, appuyez sur {digit}.' */
  menuLine?: string;
}

export interface AgentDefinition {
  /** The system prompt, or a function of the call. The call's current language is always added to it. */
  instructions?: string | ((call: CallInfo) => string);
  /** Chat-completions settings; `name` defaults to OPENAI_MODEL. */
  model?: { name?: string; temperature?: number; maxTokens?: number };
  tools?: Tool<any>[]; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** The built-in tools, each on unless set to false. */
  builtInTools?: { switchLanguage?: boolean; collectDigits?: boolean; handoff?: boolean };
  /** Languages the agent speaks; the first is a new call's language. Default en-US and es-US. */
  languages?: AgentLanguage[];
  /** Said by Twilio when the call connects, per language code or one for all. */
  welcomeGreeting?: string | Record<string, string>;
  /** The agent's own keypad entries, alongside language, phoneNumber, dateOfBirth and digits. */
  keypadEntries?: KeypadEntry[];
}

/** Declares an agent (typed identity: the server resolves it). */
export function defineAgent(agent: AgentDefinition): AgentDefinition {
  return agent;
}

/** An agent with every default filled in, as the server and its actors use it. */
export interface ResolvedAgent {
  instructions(call: CallInfo): string;
  model: { name: string; temperature?: number; maxTokens?: number };
  tools: ReadonlyMap<string, AnyTool>;
  toolSchemas: ReturnType<typeof toolSchema>[];
  languages: AgentLanguage[];
  /** A new call's language. */
  language: string;
  welcomeGreeting(language: string): string | undefined;
  keypad: KeypadSpecs;
}

export const DEFAULT_LANGUAGES: AgentLanguage[] = [
  { code: 'en-US', ttsProvider: 'Google', voice: 'en-US-Journey-O', transcriptionProvider: 'Deepgram' },
  { code: 'es-US', ttsProvider: 'Google', voice: 'es-US-Journey-F', transcriptionProvider: 'Deepgram' },
];

const DEFAULT_INSTRUCTIONS = [
  'You are a friendly phone assistant. Your words are spoken aloud by text-to-speech:',
  'keep answers short, plain sentences, no markdown, lists or emoji.',
].join(' ');

function builtInHints(tools: ReadonlyMap<string, AnyTool>): string {
  const hints = [
    tools.has('collect_digits') && 'collect_digits when you need a number typed on the keypad',
    tools.has('switch_language') && 'switch_language when the caller asks for another language',
    tools.has('human_agent_handoff') && 'human_agent_handoff when the caller wants a person',
  ].filter(Boolean);
  return hints.length ? `Use ${hints.join(', ')}.` : '';
}

/** `defaults`: the environment's settings (LANGUAGE, WELCOME_GREETING, OPENAI_MODEL) for what the agent leaves out. */
export function resolveAgent(agent: AgentDefinition = {}, defaults: { language?: string; welcomeGreeting?: string; model?: string } = {}): ResolvedAgent {
  const languages = agent.languages?.length ? agent.languages : DEFAULT_LANGUAGES;
  const codes = languages.map((l) => l.code);
  const language = defaults.language && codes.includes(defaults.language) && !agent.languages ? defaults.language : codes[0]!;
  const builtIn = agent.builtInTools ?? {};
  const entries = agent.keypadEntries ?? [];
  const tools = new Map<string, AnyTool>();
  const add = (tool: AnyTool) => {
    if (tools.has(tool.name)) throw new Error(`two tools are named "${tool.name}"`);
    tools.set(tool.name, tool);
  };
  if (builtIn.switchLanguage !== false && codes.length > 1) add(switchLanguageTool(codes));
  if (builtIn.collectDigits !== false) {
    add(collectDigitsTool([...BUILT_IN_KEYPAD_ENTRIES, ...entries.map((e) => ({ kind: e.name, description: e.description }))]));
  }
  if (builtIn.handoff !== false) add(handoffTool);
  for (const tool of agent.tools ?? []) add(tool);
  const keypad: KeypadSpecs = { ...BUILT_IN_KEYPAD_SPECS, language: languageMenuSpec(menuOptions(languages)) };
  for (const entry of entries) {
    if (entry.name in keypad) throw new Error(`keypad entry "${entry.name}" is already defined`);
    keypad[entry.name] = keypadEntrySpec(entry);
  }
  const hints = builtInHints(tools);
  const greeting = agent.welcomeGreeting ?? defaults.welcomeGreeting;
  return {
    instructions: (call) => {
      const base = typeof agent.instructions === 'function' ? agent.instructions(call) : (agent.instructions ?? DEFAULT_INSTRUCTIONS);
      return [base, `Reply in the caller's current language: ${call.language}.`, agent.instructions ? '' : hints].filter(Boolean).join(' ');
    },
    model: { ...agent.model, name: agent.model?.name ?? defaults.model ?? 'gpt-4o-mini' },
    tools,
    toolSchemas: [...tools.values()].map(toolSchema),
    languages,
    language,
    welcomeGreeting: (code) => (typeof greeting === 'string' || greeting === undefined ? greeting : (greeting[code] ?? Object.values(greeting)[0])),
    keypad,
  };
}

function menuOptions(languages: AgentLanguage[]) {
  return languages.map((l) => ({
    code: l.code,
    line: l.menuLine ?? DEFAULT_LANGUAGE_MENU.find((o) => o.code === l.code)?.line ?? `${l.code}: {digit}.`,
  }));
}
