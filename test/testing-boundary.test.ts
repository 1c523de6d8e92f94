// src/testing is the testing kit (`relay-actors/testing`): what runs in production never loads it.
// Only src/testing itself and the `npm run call` CLI (src/client) may import it.
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const SRC = fileURLToPath(new URL('../src', import.meta.url));
const MAY_IMPORT_TESTING = ['testing/', 'client/'];

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

describe('the testing kit stays out of what ships', () => {
  it('no module outside src/testing and src/client imports src/testing', () => {
    const offenders = sourceFiles(SRC)
      .map((file) => relative(SRC, file).split('\\').join('/'))
      .filter((rel) => !MAY_IMPORT_TESTING.some((dir) => rel.startsWith(dir)))
      .filter((rel) => /(from\s+|import\s*\(\s*)['"][./]*\/?testing\//.test(readFileSync(join(SRC, rel), 'utf8')));
    expect(offenders).toEqual([]);
  });
});
