import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // examples/ run in a project of their own, against the packed package (test/example-appointments.test.ts).
    exclude: [...configDefaults.exclude, 'examples/**'],
    // Caps, not speed checks (tests wait for events): generous, since a loaded 2-core machine running
    // three files beside a CPU hog (npm run test:stress) has taken over 20 s to start child servers.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // expect.poll waits for an event (a frame, a stored record, a state); on a busy machine that can take seconds.
    expect: { poll: { timeout: 10_000 } },
    // Server-process tests spawn children and share the local Redis; keep files in separate forks.
    pool: 'forks',
    // Vitest ran one file at a time here by default; most files wait on sockets, timers and child
    // processes rather than on the CPU, so three at a time fit a 2-core machine.
    maxWorkers: 3,
  },
});
