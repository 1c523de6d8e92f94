// The fast machine-level and unit tests that `npm run test:mutation` (StrykerJS) runs against every
// mutant of src/machines and src/protocol: no server, no child process, no store, no sockets; time
// runs on fake timers or a test clock. Also runnable on their own: `npx vitest run -c vitest.mutation.config.ts`.
import { defineConfig } from 'vitest/config';

export const MUTATION_TESTS = [
  'test/session-machine.test.ts',
  'test/session-replies.test.ts',
  'test/dtmf-machines.test.ts',
  'test/deadline-timer.test.ts',
  'test/modules-load.test.ts',
  'test/protocol.test.ts',
  'test/history-bound.test.ts',
  'test/write-worthy.test.ts',
];

export default defineConfig({
  test: {
    include: MUTATION_TESTS,
    testTimeout: 20_000,
  },
});
