// The playground's speech paths in chromium. The browser's speech engines are the outside world here,
// so the page gets stand-ins: a recognizer that hears one phrase, and a speechSynthesis that reports
// how far it has spoken. Everything else is real: talking over a reply being spoken stops it and sends `interrupt` with what was heard, and the
// server keeps only that much of the reply in the history the model is sent.
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeOpenAI } from '../src/testing/fake-openai-server.js';
import { chromiumPath, openPlayground, say as sayOn, type PlaygroundSession } from './support/playground-browser.js';
import { lastUserText, scenarioScript } from './support/resume-scenario.js';

/** A speech engine that "speaks" until cancelled, having said the first 4 characters. */
const fakeSpeech = () => {
  const w = window as unknown as Record<string, unknown>;
  const spoken: string[] = [];
  const synth = {
    speaking: false,
    speak(u: { text: string; onboundary?: (e: { charIndex: number }) => void }) {
      synth.speaking = true;
      spoken.push(u.text);
      setTimeout(() => u.onboundary?.({ charIndex: 4 }), 0);
    },
    cancel() {
      synth.speaking = false;
      w.cancelled = true;
    },
  };
  w.spoken = spoken;
  // Recognition: "hears" one final phrase when started.
  w.SpeechRecognition = class {
    lang = '';
    interimResults = true;
    onresult?: (e: unknown) => void;
    start() {
      const result = Object.assign([{ transcript: 'what are your opening hours' }], { isFinal: true });
      setTimeout(() => this.onresult?.({ results: [result] }), 0);
    }
  };
  Object.defineProperty(window, 'speechSynthesis', { value: synth });
  w.SpeechSynthesisUtterance = class {
    onboundary?: (e: { charIndex: number }) => void;
    constructor(readonly text: string) {}
  };
};

describe.skipIf(!chromiumPath)('the playground hears the microphone, speaks replies, and talking over one interrupts it', () => {
  let session: PlaygroundSession | undefined;
  let llm: FakeOpenAI;
  let page: Page;

  beforeAll(async () => {
    session = await openPlayground(scenarioScript(), {
      prepare: async (p) => {
        await p.addInitScript(fakeSpeech);
      },
    });
    ({ llm, page } = session);
    await page.check('#speak');
  }, 60_000);
  afterAll(() => session?.close());

  const say = (text: string) => sayOn(page, text);

  it('what the microphone hears is said to the agent', async () => {
    await page.click('#mic');
    await expect.poll(() => page.locator('.line.agent').allInnerTexts()).toContain('You said: what are your opening hours');
    await expect.poll(() => page.locator('.line.caller').allInnerTexts()).toContain('what are your opening hours');
  });

  it('a reply is spoken; saying something over it sends what was heard, and the model is told only that', async () => {
    await say('hello there');
    await expect.poll(() => page.evaluate(() => (window as unknown as { spoken: string[] }).spoken)).toContain('You said: hello there');
    await say('wait a moment');
    await expect.poll(() => page.evaluate(() => (window as unknown as { cancelled?: boolean }).cancelled)).toBe(true);
    await expect.poll(() => page.locator('#timeline').innerText()).toContain('interrupt (heard 4 characters)');
    await expect.poll(() => llm.requests.some((r) => lastUserText(r.messages) === 'wait a moment')).toBe(true);
    const request = llm.requests.find((r) => lastUserText(r.messages) === 'wait a moment')!;
    const assistant = request.messages.filter((m) => m.role === 'assistant').map((m) => String(m.content));
    // The reply talked over is the last assistant turn, cut to what was heard.
    expect(assistant.at(-1)).toContain('You ');
    expect(assistant.at(-1)).not.toContain('hello there');
    expect(assistant.some((text) => text.includes('hello there'))).toBe(false);
  });
});
