// Soak (memory over long runs, dispose, GC) and load (concurrency) with numbers.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { LSTM, backendInfo, mulberry32, randomTensor } from './helpers';

describe('soak', () => {
  it('100,000 forwards and 10,000 training steps keep RSS flat; dispose and GC free native memory', () => {
    // V8's young generation is pinned at 1 MiB: its adaptive growth would otherwise look like a leak.
    const args = ['--expose-gc', '--min-semi-space-size=1', '--max-semi-space-size=1', path.join(__dirname, 'soak/soak.cjs')];
    const out = JSON.parse(execFileSync(process.execPath, args, { encoding: 'utf8', timeout: 280_000 }).trim());
    console.log('soak:', JSON.stringify(out));
    expect(out.forwardRssGrowthMB).toBeLessThan(5);
    expect(out.trainRssGrowthMB).toBeLessThan(5);
    if (backendInfo().native) {
      // four models hold their JS weights (16 MiB each) and the native packed copy (16 MiB each)
      expect(out.disposeHeldMB).toBeGreaterThan(100);
      expect(out.disposeFreedMB).toBeGreaterThan(50); // the native copies
    }
    expect(out.droppedRssGrowthMB).toBeLessThan(20);
  }, 300_000);
});

describe('load', () => {
  it('64 concurrent forwardAsync calls on one model equal sequential calls; the event loop stays responsive', async () => {
    const m = new LSTM({ inputSize: 64, hiddenSize: 128, numLayers: 2, seed: 5 });
    const rand = mulberry32(6);
    const xs = Array.from({ length: 64 }, () => randomTensor([32, 4, 64], rand));
    const expected = xs.map((x) => m.forward(x).output.data);
    let last = performance.now();
    let worstLag = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      worstLag = Math.max(worstLag, now - last);
      last = now;
    }, 1);
    // Issued one per event-loop turn, as requests arrive in a server, so that the timer
    // measures the loop while the calls run. (Issued in one synchronous burst, the burst's
    // own length counted as lag: 64 calls take 1.5-33 ms on this 2-core VM, depending on
    // how much of a core the computing threads leave the issuing one.)
    const pending: Promise<{ output: { data: Float32Array } }>[] = [];
    for (const x of xs) {
      pending.push(m.forwardAsync(x));
      await new Promise((resolve) => setImmediate(resolve));
    }
    const results = await Promise.all(pending);
    clearInterval(timer);
    results.forEach((r, i) => expect(r.output.data).toEqual(expected[i]));
    console.log(`load: 64 concurrent forwardAsync, worst 1 ms-timer lag ${worstLag.toFixed(1)} ms (${m.backend})`);
    if (m.backend === 'native') expect(worstLag).toBeLessThan(50);
  });

  it('the same work split across 4 worker_threads gives the same results', async () => {
    const script = `
      const { parentPort, workerData } = require('node:worker_threads');
      const { LSTM } = require(workerData.lib);
      const m = new LSTM({ inputSize: 16, hiddenSize: 48, numLayers: 2, seed: 9 });
      (async () => {
        const outs = [];
        for (let k = workerData.part; k < 16; k += 4) {
          const x = { data: new Float32Array(20 * 3 * 16).map((_, i) => Math.sin(i * 0.37 + k)), shape: [20, 3, 16] };
          outs.push({ k, data: Array.from((await m.forwardAsync(x)).output.data) });
        }
        parentPort.postMessage(outs);
      })();`;
    const lib = path.resolve(__dirname, '../dist/cjs/index.js');
    const parts = await Promise.all(
      [0, 1, 2, 3].map((part) => new Promise<{ k: number; data: number[] }[]>((resolve, reject) => {
        const w = new Worker(script, { eval: true, workerData: { lib, part } });
        w.once('message', (msg) => {
          resolve(msg);
          void w.terminate();
        });
        w.once('error', reject);
      })),
    );
    const m = new LSTM({ inputSize: 16, hiddenSize: 48, numLayers: 2, seed: 9 });
    const all = parts.flat();
    expect(all).toHaveLength(16);
    for (const { k, data } of all) {
      const x = { data: new Float32Array(20 * 3 * 16).map((_, i) => Math.sin(i * 0.37 + k)), shape: [20, 3, 16] };
      expect(data).toEqual(Array.from(m.forward(x).output.data));
    }
  });
});
