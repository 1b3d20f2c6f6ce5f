// The WebAssembly engine's own contract: how it is chosen, that it gives back the memory
// it took, and that a failed allocation is an LstmError. (Its numbers are checked with
// every other engine's by parity, differential, training, streaming and fuzz tests.)
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { RELAXED_PROBE } from '../scripts/relaxed-simd.mjs';
import { LSTM, LstmError, backendInfo, expectClose, lib, mulberry32, randomTensor } from './helpers';

const root = path.resolve(__dirname, '..');

function withEnv<T>(vars: Record<string, string | undefined>, fn: () => T): T {
  const prev = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(vars)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  try {
    return fn();
  } finally {
    for (const [k, v] of Object.entries(prev)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/** Run a script in a fresh Node with --expose-gc; it prints one JSON line. */
function child(script: string): any {
  const out = execFileSync(process.execPath, ['--expose-gc', '-e', script], {
    cwd: root,
    env: { ...process.env, LSTM_BACKEND: '' },
    encoding: 'utf8',
  });
  return JSON.parse(out.trim().split('\n').pop()!);
}

describe('wasm engine', () => {
  it('ships in the package, imports nothing, and backendInfo reports it', () => {
    const info = backendInfo();
    expect(info.wasm, info.wasmReason).toBe(true);
    expect(info.platform).toBe('node');
    const mod = new WebAssembly.Module(readFileSync(path.join(root, 'wasm', 'lstm.wasm')));
    expect(WebAssembly.Module.imports(mod)).toEqual([]);
    expect(WebAssembly.Module.exports(mod).map((e) => e.name)).toContain('lstm_forward');
  });

  it("LSTM_BACKEND=wasm sends 'auto' models to wasm; backend: 'wasm' asks for it", () => {
    withEnv({ LSTM_BACKEND: 'wasm' }, () => {
      expect(new LSTM({ inputSize: 2, hiddenSize: 3 }).backend).toBe('wasm');
      expect(backendInfo().engine).toBe('wasm');
      expect(backendInfo().reason).toMatch(/LSTM_BACKEND=wasm/);
    });
    expect(new LSTM({ inputSize: 2, hiddenSize: 3, backend: 'wasm' }).backend).toBe('wasm');
    withEnv({ LSTM_BACKEND: 'gpu' }, () => {
      expect(() => new LSTM({ inputSize: 2, hiddenSize: 3 })).toThrow(/LSTM_BACKEND: expected 'native', 'wasm', 'js' or 'auto'/);
    });
  });

  it('ships two builds: relaxed SIMD where the host has it, else SIMD128; LSTM_WASM_SIMD picks one', () => {
    for (const file of ['lstm.wasm', 'lstm-relaxed.wasm']) {
      const mod = new WebAssembly.Module(readFileSync(path.join(root, 'wasm', file)));
      expect(WebAssembly.Module.imports(mod), file).toEqual([]);
    }
    // helpers.ts turned relaxed SIMD on (Node 20 has it behind a flag), so 'auto' takes it.
    expect(backendInfo().wasmSimd).toBe('relaxed');
    withEnv({ LSTM_WASM_SIMD: 'simd128' }, () => expect(backendInfo().wasmSimd).toBe('simd128'));
    withEnv({ LSTM_WASM_SIMD: 'avx' }, () => {
      let err: unknown;
      try {
        new LSTM({ inputSize: 2, hiddenSize: 3, backend: 'wasm' });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(LstmError);
      expect((err as InstanceType<typeof LstmError>).code).toBe('LSTM_OPTION');
      expect((err as Error).message).toMatch(/LSTM_WASM_SIMD: expected 'relaxed', 'simd128' or 'auto', got "avx"/);
      expect(backendInfo().wasmReason).toMatch(/LSTM_WASM_SIMD: expected/);
    });
    // The two modules really differ: relaxed fuses each multiply-add (one rounding), so
    // some outputs differ in their last bits; both stay within float tolerance of each other.
    const rand = mulberry32(11);
    const x = randomTensor([20, 3, 64], rand);
    const build = (simd: string) => withEnv({ LSTM_WASM_SIMD: simd }, () => new LSTM({ inputSize: 64, hiddenSize: 48, numLayers: 2, backend: 'wasm', seed: 5 }));
    const relaxed = build('relaxed');
    const simd128 = build('simd128');
    const a = relaxed.forward(x).output;
    const b = simd128.forward(x).output;
    expectClose(a, b, 'relaxed vs simd128', 1e-5, 1e-4);
    expect(a.data.some((v, i) => !Object.is(v, b.data[i]))).toBe(true);
    relaxed.dispose();
    simd128.dispose();
  });

  it('a host without relaxed SIMD gets SIMD128; asking it for relaxed says why not', () => {
    const probe = JSON.stringify(Array.from(RELAXED_PROBE));
    const script = `
      const { backendInfo } = require('./dist/cjs/index.js');
      const info = backendInfo();
      console.log(JSON.stringify({ host: WebAssembly.validate(new Uint8Array(${probe})), wasm: info.wasm, simd: info.wasmSimd, reason: info.wasmReason }));
    `;
    const auto = child(script);
    expect(auto.wasm).toBe(true);
    expect(auto.simd).toBe(auto.host ? 'relaxed' : 'simd128');
    if (!auto.host) {
      const forced = execFileSync(process.execPath, ['-e', script], { cwd: root, env: { ...process.env, LSTM_BACKEND: '', LSTM_WASM_SIMD: 'relaxed' }, encoding: 'utf8' });
      const r = JSON.parse(forced.trim().split('\n').pop()!);
      expect(r.wasm).toBe(false);
      expect(r.reason).toMatch(/no relaxed SIMD: Node 20 needs --experimental-wasm-relaxed-simd/);
    }
  });

  it('initWasm() resolves (Node loads the module synchronously anyway) and rejects bad bytes with LSTM_WASM', async () => {
    await expect(lib.initWasm()).resolves.toBeUndefined();
    // Already compiled: a second call is a no-op, even with a source.
    await expect(lib.initWasm(new Uint8Array([1, 2, 3]))).resolves.toBeUndefined();
    const r = child(`
      const lib = require('./dist/cjs/index.js');
      lib.initWasm(new Uint8Array([0, 97, 115, 109, 9, 9, 9, 9])).then(() => console.log('{}'), (e) => console.log(JSON.stringify({ code: e.code, message: e.message })));
    `);
    expect(r.code).toBe('LSTM_WASM');
    expect(r.message).toMatch(/could not be loaded/);
  });

  it('dispose() returns the module memory a model took, measured in wasm memory and in RSS', () => {
    const r = child(`
      const { LSTM, backendInfo } = require('./dist/cjs/index.js');
      const mb = (b) => b / 2 ** 20;
      const rss = () => { global.gc(); global.gc(); return process.memoryUsage().rss; };
      const before = { wasm: backendInfo().wasmMemory, rss: rss() };
      // 2 layers of I = H = 1024: 64 MiB of packed weights in the module.
      const big = new LSTM({ inputSize: 1024, hiddenSize: 1024, numLayers: 2, backend: 'wasm', seed: 1 });
      big.forward({ data: new Float32Array(4 * 2 * 1024).fill(0.1), shape: [4, 2, 1024] });
      const held = { wasm: backendInfo().wasmMemory, rss: rss() };
      big.dispose();
      const after = { wasm: backendInfo().wasmMemory, rss: rss() };
      // Two models: disposing one frees its share inside the module for the next one.
      const a = new LSTM({ inputSize: 512, hiddenSize: 512, backend: 'wasm' });
      const b = new LSTM({ inputSize: 512, hiddenSize: 512, backend: 'wasm' });
      const two = backendInfo().wasmMemory;
      b.dispose();
      const c = new LSTM({ inputSize: 512, hiddenSize: 512, backend: 'wasm' });
      const reused = backendInfo().wasmMemory;
      a.dispose(); c.dispose();
      console.log(JSON.stringify({ before, held, after, two, reused, end: backendInfo().wasmMemory, packed: 64 * 2 ** 20 }));
    `);
    expect(r.before.wasm).toBe(0);
    expect(r.held.wasm).toBeGreaterThanOrEqual(r.packed);
    expect(r.after.wasm).toBe(0);
    // The host got the pages back: RSS fell by most of what the module held.
    expect(r.held.rss - r.after.rss).toBeGreaterThan(0.8 * r.packed);
    expect(r.reused).toBe(r.two);
    expect(r.end).toBe(0);
  });

  it('models dropped without dispose() are reclaimed by the garbage collector', () => {
    const r = child(`
      const { LSTM, backendInfo } = require('./dist/cjs/index.js');
      const keep = new LSTM({ inputSize: 4, hiddenSize: 4, backend: 'wasm' });
      const tick = () => new Promise((r) => setTimeout(r, 0));
      (async () => {
        let peak = 0;
        for (let i = 0; i < 40; i++) {
          // 8 MiB of packed weights each, never disposed
          new LSTM({ inputSize: 512, hiddenSize: 512, backend: 'wasm' }).forward({ data: new Float32Array(512), shape: [1, 1, 512] });
          global.gc();
          await tick();
          peak = Math.max(peak, backendInfo().wasmMemory);
        }
        keep.dispose();
        console.log(JSON.stringify({ peak }));
      })();
    `);
    // 40 models would need 320 MiB if none were reclaimed.
    expect(r.peak).toBeLessThan(96 * 2 ** 20);
  });

  it('an allocation the 4 GiB memory cannot hold is an LstmError, and the engine goes on working', () => {
    const { wasmRuntime } = require('../dist/cjs/wasm/module.js') as typeof import('../dist/cjs/wasm/module.js');
    const keep = new LSTM({ inputSize: 3, hiddenSize: 5, backend: 'wasm', seed: 2 });
    const rt = wasmRuntime();
    let err: unknown;
    try {
      rt.alloc(0xffff_0000, 'test');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(LstmError);
    expect((err as LstmError).code).toBe('LSTM_WASM');
    const x = randomTensor([3, 2, 3], mulberry32(1));
    const js = new LSTM({ inputSize: 3, hiddenSize: 5, backend: 'js' });
    js.loadStateDict(keep.stateDict());
    expectClose(keep.forward(x).output, js.forward(x).output, 'after a failed allocation');
    keep.dispose();
  });
});
