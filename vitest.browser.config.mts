// `npm run test:browser`: the browser build in headless Chromium. Kept out of `npm test`
// because it needs a browser on the machine (Debian's chromium; .ci/run installs it).
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.browser-test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
  },
});
