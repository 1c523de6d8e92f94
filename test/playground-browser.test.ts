// /playground in a real browser: Debian's chromium driven by playwright-core (no browser download).
// A turn with streamed tokens; a phone number on the keypad, dropped in the middle of the entry,
// resumed by the client on its own and completed; and no typed digit ever on the page in clear.
// PLAYGROUND_SCREENSHOT=<path> also saves a screenshot of the page (the README's).
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { FakeOpenAI } from '../src/testing/fake-openai-server.js';
import type { TestServer } from './support/harness.js';
import { chromiumPath, openPlayground, say as sayOn, type PlaygroundSession } from './support/playground-browser.js';
import { DIGITS_OK, holdNextStory, scenarioScript } from './support/resume-scenario.js';

describe.skipIf(!chromiumPath)('the playground in chromium', () => {
  let session: PlaygroundSession | undefined;
  let llm: FakeOpenAI;
  let ts: TestServer;
  let page: Page;
  const script = scenarioScript({ storyDelayMs: 5 });
  /**
   * Every text the page showed after each step: no typed digit may appear in any of them. The callSid
   * (random hex, shown in the panel) is left out: it could hold any run of digits by chance.
   */
  const seen: string[] = [];
  const look = async () => {
    const callSid = await page.locator('#call-sid').innerText();
    seen.push((await page.locator('body').innerText()).replaceAll(callSid, ''));
  };

  beforeAll(async () => {
    session = await openPlayground(script, { config: { graceMs: 60_000 }, viewport: { width: 1200, height: 820 } });
    ({ llm, ts, page } = session);
  }, 60_000);
  afterAll(() => session?.close());

  const agentLines = () => page.locator('.line.agent').allInnerTexts();
  const say = (text: string) => sayOn(page, text);
  const press = async (digits: string) => {
    for (const d of digits) {
      await page.click(`#keypad button[data-key="${d}"]`);
      await look();
    }
  };

  it('a turn: the reply appears token by token', async () => {
    await say('hello there');
    await expect.poll(agentLines).toContain('You said: hello there');
    const tokens = await page.locator('.line.agent').last().getAttribute('data-tokens');
    expect(Number(tokens)).toBeGreaterThan(1);
    await expect.poll(() => page.locator('#link').innerText()).toBe('connected');
    await look();
  });

  it('a phone number on the keypad, dropped halfway: the client resumes by itself and the entry completes', async () => {
    await say('my phone number');
    await expect.poll(async () => (await agentLines()).some((l) => l.includes('10-digit phone number'))).toBe(true);
    await press('5551');
    await expect.poll(() => page.locator('#progress').innerText()).toMatch(/^●{4}.* 4$/);
    await page.click('#drop');
    await expect.poll(() => page.locator('#timeline').innerText()).toContain('resumed after');
    await expect.poll(() => page.locator('#resumes').innerText()).toBe('1');
    await look();
    await press('234567');
    await expect.poll(agentLines).toContain(DIGITS_OK);
    const toolResult = llm.requests.at(-1)!.messages.at(-1)!;
    expect(JSON.parse(String(toolResult.content))).toMatchObject({ status: 'ok', kind: 'phoneNumber', value: '5551234567' });
    // The panel follows the call: the entry is over.
    await expect.poll(() => page.locator('#keypad-entry').innerText()).toBe('-');
    await expect.poll(() => page.locator('#state-value').innerText()).toContain('"conversation":"idle"');
    await look();
    if (process.env.PLAYGROUND_SCREENSHOT) await page.screenshot({ path: process.env.PLAYGROUND_SCREENSHOT });
  });

  it('no typed digit was ever shown in clear', () => {
    expect(seen.length).toBeGreaterThan(10);
    for (const text of seen) {
      for (const typed of ['5551', '234567', '555-1234', '(555)']) expect(text).not.toContain(typed);
    }
    expect(seen.at(-1)).toContain('key pressed');
  });

  const streamingStory = async () => {
    const release = holdNextStory(llm, script, 3);
    await say('tell me a story');
    await expect.poll(() => page.locator('.line.agent').last().getAttribute('class')).toContain('streaming');
    return release;
  };

  it('a reply cut by a drop stays cut: only the resumed one streams, then nothing does', async () => {
    const release = await streamingStory();
    await page.click('#drop');
    await expect.poll(() => page.locator('#resumes').innerText()).toBe('2');
    release();
    await expect.poll(async () => (await agentLines()).at(-1)).toMatch(/^Sorry, we got cut off.*came back again\.$/);
    expect(await page.locator('.line.agent.cut').count()).toBe(1);
    expect(await page.locator('.line.agent.streaming').count()).toBe(0);
  });

  it('hung up while a reply streams: the panel follows the call to its end', async () => {
    const release = await streamingStory();
    await page.click('#hangup');
    await expect.poll(() => page.locator('#connection').innerText()).toBe('closed');
    release();
    // The server has the call disconnected (in its grace period): not the 'connected' of the last poll.
    await expect.poll(() => page.locator('#link').innerText()).toBe('disconnected');
  });

  it('a second call in the same page starts clean: its replies show, its panel is its own', async () => {
    await page.click('#start');
    await vi.waitFor(async () => expect(await page.locator('#connection').innerText()).toBe('open'), { timeout: 10_000 });
    await say('hello again');
    await expect.poll(agentLines).toEqual(['You said: hello again']);
    await expect.poll(() => page.locator('#resumes').innerText()).toBe('0');
    await expect.poll(() => page.locator('#link').innerText()).toBe('connected');
  });
});

