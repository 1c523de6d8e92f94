// The /playground page's behaviour, bundled for the browser (esbuild): a call to this server's agent
// over the real protocol with relay-actors/client. Typed digits are never put on the page: the panel
// shows how many keys the server has, the timeline only that a key was pressed.
import { ConversationRelayClient, type ClientState } from '../client/index.js';
import type { DtmfDigit } from '../protocol/messages.js';
import type { PlaygroundView as View } from './view.js';


const byId = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const transcript = byId<HTMLDivElement>('transcript');
const utterance = byId<HTMLInputElement>('utterance');
const timeline = byId<HTMLUListElement>('timeline');
const KEYS: DtmfDigit[] = ['1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '0', '#'];

function note(text: string): void {
  const item = document.createElement('li');
  item.textContent = `${new Date().toISOString().slice(11, 23)} ${text}`;
  timeline.prepend(item);
}

function line(who: 'caller' | 'agent', text: string): HTMLDivElement {
  const div = document.createElement('div');
  div.className = `line ${who}`;
  div.textContent = text;
  transcript.append(div);
  transcript.scrollTop = transcript.scrollHeight;
  return div;
}

/** Speech synthesis, where the browser has it: what has been spoken so far is what an interrupt says was heard. */
const voice = {
  available: 'speechSynthesis' in window,
  on: false,
  text: '',
  heardUpTo: 0,
  speak(text: string): void {
    if (!this.available || !this.on || !text.trim()) return;
    const spoken = new SpeechSynthesisUtterance(text);
    this.text = text;
    this.heardUpTo = 0;
    spoken.onboundary = (event) => (this.heardUpTo = event.charIndex);
    speechSynthesis.speak(spoken);
  },
  /** Barge-in: stops speaking and returns what was heard, or undefined when nothing was being said. */
  cut(): string | undefined {
    if (!this.available || !speechSynthesis.speaking) return undefined;
    speechSynthesis.cancel();
    return this.text.slice(0, this.heardUpTo);
  },
};

let call: ConversationRelayClient | undefined;
let agentLine: HTMLDivElement | undefined;
let poll: ReturnType<typeof setInterval> | undefined;

/** The agent's line that was streaming (if any) will get no more tokens: marked cut, and let go. */
function endAgentLine(): void {
  agentLine?.classList.replace('streaming', 'cut');
  agentLine = undefined;
}

function setControls(state: ClientState): void {
  byId('connection').textContent = state;
  const live = state === 'open' || state === 'reconnecting' || state === 'connecting';
  for (const id of ['utterance', 'send', 'drop', 'hangup', 'mic']) (byId<HTMLButtonElement>(id)).disabled = !live;
  for (const key of document.querySelectorAll<HTMLButtonElement>('#keypad button')) key.disabled = !live;
  byId<HTMLButtonElement>('start').disabled = live;
}

/** The caller speaks over the reply being spoken: it stops, and the server learns what was heard. */
function bargeIn(): void {
  const heard = voice.cut();
  if (heard === undefined || !call) return;
  call.interrupt(heard);
  note(`interrupt (heard ${heard.length} characters)`);
}

function say(text: string): void {
  // A recognition result can land after a hang-up: there is no call to say it to any more.
  if (!call || !text.trim() || !['connecting', 'open', 'reconnecting'].includes(call.state)) return;
  bargeIn();
  line('caller', text);
  call.prompt(text);
}

/** The call's view from the server, or undefined when it has none for this key (or cannot be reached). */
async function readView(callSid: string, resumeKey: string): Promise<View | undefined> {
  const response = await fetch(`/playground/calls/${encodeURIComponent(callSid)}`, { headers: { 'x-resume-key': resumeKey } }).catch(() => undefined);
  return response?.ok ? ((await response.json().catch(() => undefined)) as View | undefined) : undefined;
}

const PANEL = ['state-value', 'link', 'language', 'keypad-entry', 'progress'];

function showView(view: View): void {
  byId('state-value').textContent = JSON.stringify(view.state);
  byId('link').textContent = view.link;
  byId('language').textContent = view.language;
  byId('resumes').textContent = String(view.resumes);
  byId('keypad-entry').textContent = view.keypad ? `${view.keypad.kind}${view.keypad.label ? ` (${view.keypad.label})` : ''}` : '-';
  byId('progress').textContent = view.keypad
    ? '●'.repeat(view.keypad.entered) + (view.keypad.maxLength ? '○'.repeat(Math.max(0, view.keypad.maxLength - view.keypad.entered)) : '') + ` ${view.keypad.entered}`
    : '-';
}

const over = (state: ClientState) => state === 'ended' || state === 'closed' || state === 'gaveUp';
/** Reads after the call is over until the server's view shows it (a hang-up reaches it after the last read). */
const FINAL_READS = 10;

function start(): void {
  // A second call in the same page: nothing of the first may carry over. A reply cut by its hang-up
  // got no `last` token, so its (now removed) line would take the new call's tokens.
  clearInterval(poll);
  endAgentLine();
  for (const id of PANEL) byId(id).textContent = '-';
  byId('resumes').textContent = '0';
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/relay`;
  const client = new ConversationRelayClient({ url, from: '+15550100000', to: 'playground' });
  call = client;
  byId('call-sid').textContent = client.callSid;
  transcript.replaceChildren();
  let readsAfterEnd = 0;
  const refreshPanel = async (timer: ReturnType<typeof setInterval>) => {
    const view = await readView(client.callSid, client.resumeKey);
    // A read still in flight when a new call started: the panel is the new call's.
    if (call !== client) return clearInterval(timer);
    if (view) showView(view);
    // Not stopped the moment the call is over: the last read would show it as it was before (still
    // connected). It stops once the server's view has the call's end, or has no call, or after a few.
    if (over(client.state) && (!view || view.link !== 'connected' || ++readsAfterEnd >= FINAL_READS)) clearInterval(timer);
  };
  client.on('state', ({ state }) => {
    setControls(state);
    note(`state ${state}`);
    if (over(state)) endAgentLine();
  });
  client.on('token', ({ token, last }) => {
    agentLine ??= line('agent', '');
    agentLine.classList.add('streaming');
    agentLine.textContent += token;
    agentLine.dataset.tokens = String(Number(agentLine.dataset.tokens ?? 0) + 1);
    transcript.scrollTop = transcript.scrollHeight;
    if (last) {
      agentLine.classList.remove('streaming');
      voice.speak(agentLine.textContent ?? '');
      agentLine = undefined;
    }
  });
  client.on('language', ({ ttsLanguage }) => note(`language ${ttsLanguage ?? ''}`));
  client.on('reconnecting', ({ attempt, delayMs, code }) => {
    // The reply being spoken was cut: the server says it again after the resume line. Its line gets
    // no `last` token, so it is marked cut here or it would look as if it were still streaming.
    endAgentLine();
    note(`reconnecting: attempt ${attempt} in ${delayMs} ms (closed ${code})`);
  });
  client.on('resumed', ({ attempts }) => note(`resumed after ${attempts} attempt(s)`));
  client.on('restarted', () => note('the server no longer had the call: it started afresh'));
  client.on('gaveUp', ({ reason, detail }) => note(`gave up (${reason}): ${detail}`));
  client.on('end', ({ handoffData }) => note(`call ended${handoffData ? ` (hand-off: ${handoffData})` : ''}`));
  note('connecting');
  client.connect().then(
    () => {
      const timer: ReturnType<typeof setInterval> = setInterval(() => void refreshPanel(timer), 400);
      poll = timer;
      utterance.focus();
    },
    (err: unknown) => note(String(err)),
  );
}

for (const key of KEYS) {
  const button = document.createElement('button');
  button.textContent = key;
  button.dataset.key = key;
  button.disabled = true;
  button.addEventListener('click', () => {
    call?.dtmf(key);
    note('key pressed');
  });
  byId('keypad').append(button);
}

byId('start').addEventListener('click', start);
byId('drop').addEventListener('click', () => {
  note('dropping the connection');
  call?.drop();
});
byId('hangup').addEventListener('click', () => {
  // The caller is gone: so is whatever was still being spoken to them.
  voice.cut();
  call?.close();
});
byId<HTMLFormElement>('say').addEventListener('submit', (event) => {
  event.preventDefault();
  say(utterance.value);
  utterance.value = '';
});

if (voice.available) {
  byId('speak-label').hidden = false;
  byId<HTMLInputElement>('speak').addEventListener('change', (event) => (voice.on = (event.target as HTMLInputElement).checked));
}

type Recognition = { lang: string; interimResults: boolean; onresult: (event: { results: ArrayLike<ArrayLike<{ transcript: string }> & { isFinal: boolean }> }) => void; start(): void };
const Recognizer = (window as unknown as { SpeechRecognition?: new () => Recognition; webkitSpeechRecognition?: new () => Recognition }).SpeechRecognition ??
  (window as unknown as { webkitSpeechRecognition?: new () => Recognition }).webkitSpeechRecognition;
if (Recognizer) {
  const mic = byId<HTMLButtonElement>('mic');
  mic.hidden = false;
  mic.addEventListener('click', () => {
    const recognition = new Recognizer();
    recognition.lang = 'en-US';
    recognition.interimResults = false;
    recognition.onresult = (event) => {
      const result = event.results[event.results.length - 1];
      if (result?.isFinal && result[0]) say(result[0].transcript);
    };
    // Speaking over the reply cuts it, as a caller's voice does on a phone.
    bargeIn();
    recognition.start();
  });
}
