// StrykerJS: `npm run test:mutation`. Mutates the machines and the wire protocol and runs only the
// fast machine-level tests (vitest.mutation.config.ts) against each mutant. Not part of CI.
/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'vitest',
  vitest: { configFile: 'vitest.mutation.config.ts' },
  mutate: ['src/machines/**/*.ts', 'src/protocol/**/*.ts'],
  coverageAnalysis: 'perTest',
  // The dev machine has 2 cores and other work runs beside it.
  concurrency: 2,
  // A static mutant (one in code that runs at load) reruns every test file; on a busy machine that can
  // pass the default 5 s allowance, which would count a harmless mutant as detected (timed out).
  timeoutMS: 15_000,
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/mutation.html' },
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  thresholds: { high: 90, low: 80, break: 80 },
  tempDirName: '.stryker-tmp',
  cleanTempDir: true,
};
