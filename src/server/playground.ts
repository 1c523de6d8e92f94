// PLAYGROUND=1: /playground, a page that talks to the agent over the real protocol from a browser
// (src/playground/app.ts on relay-actors/client), fully offline: the page, its script and styles are
// all served from here. Its live panel reads its own call's state from /playground/calls/:callSid,
// only with that call's resumeKey (the proof its resumes use); digits are counted, never shown.
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Hono } from 'hono';
import type { SessionManager } from './session-manager.js';
import { matchesHash } from './resume-proof.js';
import { lifecycleOf } from '../machines/session.js';
import { playgroundPage } from './playground-page.js';
import type { PlaygroundView } from '../playground/view.js';

/** Built by `npm run build` (scripts/build-playground.mjs) next to the compiled server. */
const BUILT = fileURLToPath(new URL('../playground/app.js', import.meta.url));
const SOURCE = fileURLToPath(new URL('../playground/app.ts', import.meta.url));

let bundle: Promise<string> | undefined;

/** The built bundle; from a source checkout (tests, `npm run dev`) bundled once with esbuild instead. */
function playgroundScript(): Promise<string> {
  bundle ??= readFile(BUILT, 'utf8').catch(async () => {
    const { build } = await import('esbuild');
    const out = await build({ entryPoints: [SOURCE], bundle: true, platform: 'browser', format: 'esm', target: 'es2022', write: false, logLevel: 'silent' });
    return out.outputFiles[0]!.text;
  });
  // A failed build is not cached: the next request tries again.
  bundle.catch(() => (bundle = undefined));
  return bundle;
}

/**
 * No resource from anywhere else: the page works with no internet. `connect-src 'self'` also covers
 * this origin's ws:/wss: (CSP level 3), so the socket can only go to this server.
 */
const CSP = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'";

export function addPlaygroundRoutes(app: Hono, manager: SessionManager): void {
  app.get('/playground', (c) => {
    c.header('Content-Security-Policy', CSP);
    return c.html(playgroundPage);
  });
  app.get('/playground/app.js', async (c) => {
    try {
      return c.body(await playgroundScript(), 200, { 'Content-Type': 'text/javascript; charset=utf-8' });
    } catch {
      return c.text('the playground is not built: run npm run build', 503);
    }
  });
  app.get('/playground/calls/:callSid', (c) => {
    const view = manager.get(c.req.param('callSid'))?.peek();
    const hash = view?.context.resumeKeyHash;
    // Unknown call and wrong key look the same: the answer says nothing about calls one cannot prove.
    if (!view || !hash || !matchesHash(c.req.header('x-resume-key'), hash)) return c.text('no such call', 404);
    const { context } = view;
    const keypad = view.children.dtmf?.getSnapshot() as { context?: { buffer?: unknown } } | undefined;
    const buffer = keypad?.context?.buffer;
    const result: PlaygroundView = {
      state: view.value,
      link: lifecycleOf(view.value),
      resumes: context.resumes,
      disconnects: context.disconnects,
      language: context.language,
      keypad: context.dtmf
        ? {
            kind: context.dtmf.kind,
            ...(context.dtmf.label ? { label: context.dtmf.label } : {}),
            entered: typeof buffer === 'string' ? buffer.length : 0,
            ...(context.dtmf.maxLength ? { maxLength: context.dtmf.maxLength } : {}),
          }
        : null,
    };
    c.header('Cache-Control', 'no-store');
    return c.json(result);
  });
}
