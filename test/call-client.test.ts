// The `npm run call` client end to end against a real server in offline mode (a child process speaking
// the real protocol).
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { offlineAnswer } from '../src/llm/offline-reply.js';
import { startTestServer } from './support/harness.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

describe('npm run call', () => {
  it('plays a scripted call against an offline-mode server and prints the transcript', async () => {
    const ts = await startTestServer({ config: { openaiApiKey: undefined, openaiBaseUrl: undefined } });
    try {
      expect(ts.server.llmMode).toBe('offline');
      const env: NodeJS.ProcessEnv = { ...process.env, RELAY_URL: ts.server.relayUrl, BASE_URL: ts.server.httpUrl };
      delete env.TWILIO_AUTH_TOKEN;
      const child = spawn('npx', ['tsx', 'src/client/call.ts'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
      const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
      expect(code, `stdout:\n${stdout}\nstderr:\n${stderr}`).toBe(0);

      const lines = stdout.trim().split('\n');
      const first = 'Hi, what can you do?';
      expect(lines[0]).toBe(`caller: ${first}`);
      expect(lines[1]).toBe(`agent: ${offlineAnswer([{ role: 'user', content: first }], 'en-US').text}`);
      expect(lines.filter((l) => l.startsWith('caller: '))).toHaveLength(3);
      // The keypad step: the agent asked for the number, got 10 digits, and thanked the caller.
      expect(lines).toContain('agent: Please enter your 10-digit phone number, starting with the area code.');
      expect(stderr).toContain('typed a 10-digit phone number on the keypad');
      expect(lines).toContain('agent: Thanks, got it.');
      expect(lines.filter((l) => l.startsWith('agent: ')).length).toBeGreaterThanOrEqual(1);
      expect(stderr).toContain('0 invalid frame(s)');

      // The client hung up and posted the action callback: the session is over on the server.
      await expect.poll(() => ts.server.manager.size, { timeout: 10_000 }).toBe(0);
    } finally {
      await ts.close();
    }
  }, 60_000);
});
