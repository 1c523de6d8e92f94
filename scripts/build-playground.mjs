// `npm run build`, after tsc: bundles the /playground page's script (src/playground/app.ts) for the
// browser with esbuild, to dist/playground/app.js, where the server serves it from.
import { build } from 'esbuild';

await build({
  entryPoints: ['src/playground/app.ts'],
  bundle: true,
  platform: 'browser',
  format: 'esm',
  target: 'es2022',
  minify: true,
  outfile: 'dist/playground/app.js',
  logLevel: 'warning',
});
