import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['*.test.ts'],
    // Each test starts a server and places a call: allow a loaded machine some time.
    testTimeout: 60_000,
    hookTimeout: 30_000,
  },
});
