// The playground in Debian's chromium (playwright-core, no browser download): a test server with
// PLAYGROUND=1, a page on it, and a call started from the page.
import { existsSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';
import { expect, vi } from 'vitest';
import type { Config } from '../../src/config.js';
import { startFakeOpenAI, type FakeOpenAI, type ScriptFn } from '../../src/testing/fake-openai-server.js';
import { startTestServer, type TestServer } from './harness.js';

/** Where Debian (or another distribution) put chromium; undefined when it is not installed. */
export const chromiumPath = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((path) => existsSync(path));

export interface PlaygroundSession {
  llm: FakeOpenAI;
  ts: TestServer;
  browser: Browser;
  page: Page;
  close(): Promise<void>;
}

/** Opens /playground in chromium and starts a call; `prepare` runs on the page before it loads. */
export async function openPlayground(
  script: ScriptFn,
  opts: { config?: Partial<Config>; viewport?: { width: number; height: number }; prepare?: (page: Page) => Promise<void> } = {},
): Promise<PlaygroundSession> {
  const llm = await startFakeOpenAI({ script });
  const ts = await startTestServer({ sharedLlm: llm, config: { playground: '1', ...opts.config } });
  const browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] });
  const page = await browser.newPage(opts.viewport ? { viewport: opts.viewport } : {});
  await opts.prepare?.(page);
  await page.goto(`${ts.server.httpUrl}/playground`);
  await page.click('#start');
  await vi.waitFor(async () => expect(await page.locator('#connection').innerText()).toBe('open'), { timeout: 10_000 });
  return {
    llm,
    ts,
    browser,
    page,
    async close() {
      await browser.close();
      await ts.close();
      await llm.close();
    },
  };
}

/** Types what the caller says and sends it. */
export async function say(page: Page, text: string): Promise<void> {
  await page.fill('#utterance', text);
  await page.press('#utterance', 'Enter');
}
