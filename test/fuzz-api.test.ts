// Seeded API fuzzing in CI: >= 10,000 cases per engine. `npm run fuzz` runs far more.
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { ENGINES, setEngineEnv } from './helpers';
import { fuzzApi } from './fuzz/api.fuzz';

const require = createRequire(import.meta.url);
const lib = require('../dist/cjs/index.js');

const RUNS = Number(process.env.FUZZ_RUNS ?? 10_000);

describe('API fuzzing', () => {
  it.each(ENGINES.filter((e) => !e.isa || e.isa !== 'scalar'))(`$label: ${RUNS} random and hostile calls end in a result or an LstmError`, async (engine) => {
    // The case's ISA and wasm build for every model the fuzzer builds, over the whole async run.
    const restore = setEngineEnv(engine);
    let report: Awaited<ReturnType<typeof fuzzApi>>;
    try {
      report = await fuzzApi(lib, engine.backend, RUNS, Number(process.env.FUZZ_SEED ?? 20261127));
    } finally {
      restore();
    }
    expect(report.cases).toBe(RUNS);
    // Both outcomes happen often, and the deep paths really run to the end.
    console.log(engine.label, JSON.stringify(report.okByTarget));
    expect(report.results).toBeGreaterThan(RUNS / 20);
    expect(report.lstmErrors).toBeGreaterThan(RUNS / 10);
    for (const t of ['constructValid', 'forward', 'forwardGoodStates', 'forwardOut', 'forwardAsync', 'step', 'initialState', 'exportOnnx', 'forwardTrain']) {
      expect(report.okByTarget[t] ?? 0, t).toBeGreaterThan(10);
    }
    expect(Object.keys(report.byTarget).length).toBeGreaterThanOrEqual(15);
  }, 300_000);
});
