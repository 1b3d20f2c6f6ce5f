// npm run fuzz: the CI fuzzers, much longer (FUZZ_RUNS API calls per engine, FUZZ_MUTATIONS per file format).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const env = { ...process.env, FUZZ_RUNS: process.env.FUZZ_RUNS ?? '200000', FUZZ_MUTATIONS: process.env.FUZZ_MUTATIONS ?? '1000000' };
const r = spawnSync(process.execPath, [path.join(root, 'node_modules/vitest/vitest.mjs'), 'run', 'test/fuzz-api.test.ts', 'test/fuzz-files.test.ts'], { cwd: root, env, stdio: 'inherit' });
process.exit(r.status ?? 1);
