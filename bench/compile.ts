// Compiles the measured processes' code (bench/ and src/) to plain JavaScript before any child starts,
// so every child runs JS as `npm start` does, not TypeScript loaded through tsx. tsx transpiles with
// esbuild's keepNames, which wraps every function a module creates in Object.defineProperty(fn,
// 'name'): each closure then carries its own property store (about 250 B), and each creation costs
// a defineProperty call. Shipped code (tsc's dist/) has neither, so a tsx-loaded server measured
// about 25% more heap per idle call than it uses in production. The floor is compiled the same way.
import { build } from 'esbuild';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The .ts modules under `dir`, leaving out earlier runs' output (.build). */
function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return e.name === '.build' ? [] : tsFiles(path);
    return e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [path] : [];
  });
}

/**
 * Transpiles every module of src/ and bench/ file by file (no bundling: the module graph is the one
 * that ships) into `outDir` inside the repository, so imports of packages resolve to node_modules.
 * Returns the compiled path of bench/child.ts.
 */
async function compileBench(outDir: string): Promise<string> {
  const entryPoints = [...tsFiles(join(repoRoot, 'src')), ...tsFiles(join(repoRoot, 'bench'))];
  await build({
    entryPoints,
    outdir: outDir,
    outbase: repoRoot,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    bundle: false,
    keepNames: false,
    sourcemap: false,
    logLevel: 'error',
    tsconfig: join(repoRoot, 'tsconfig.json'),
  });
  return join(outDir, 'bench', 'child.js');
}

/** Where runs compile the children's code (gitignored), one directory per run. */
const BUILD_ROOT = join(repoRoot, 'bench', '.build');

/** Compiles into a fresh directory of its own; `remove()` deletes it once the children have exited. */
export async function compiledChildScript(): Promise<{ script: string; remove: () => void }> {
  mkdirSync(BUILD_ROOT, { recursive: true });
  const dir = mkdtempSync(join(BUILD_ROOT, 'run-'));
  try {
    return { script: await compileBench(dir), remove: () => rmSync(dir, { recursive: true, force: true }) };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
