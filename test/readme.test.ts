// The README's code is true: its examples run as written against the built package
// (imported as 'lstm-native' through the package's own exports map), in a directory that
// holds the files they read, and every call its API summary names exists. A block that
// uses names it does not define (the user's data) runs after a prelude that defines
// them and nothing else.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURES, lib, tfjsArtifacts } from './helpers';

const root = path.resolve(__dirname, '..');
const readme = readFileSync(path.join(root, 'README.md'), 'utf8');

interface Block {
  section: string;
  code: string;
}

/** The fenced ```ts blocks of the README (indented ones in lists too), with the heading above each. */
function tsBlocks(): Block[] {
  const out: Block[] = [];
  let section = '';
  let open: { indent: string; lines: string[] } | null = null;
  for (const line of readme.split('\n')) {
    if (open) {
      if (line.trim() === '```') {
        out.push({ section, code: open.lines.join('\n') });
        open = null;
      } else {
        open.lines.push(line.startsWith(open.indent) ? line.slice(open.indent.length) : line);
      }
      continue;
    }
    const heading = /^#+ (.*)$/.exec(line);
    if (heading) section = heading[1];
    const fence = /^(\s*)```ts$/.exec(line);
    if (fence) open = { indent: fence[1], lines: [] };
  }
  return out;
}

const blocks = tsBlocks();
function block(section: string, contains: string): string {
  const found = blocks.filter((b) => b.section === section && b.code.includes(contains));
  if (found.length !== 1) throw new Error(`README: ${found.length} ts blocks in "${section}" contain ${JSON.stringify(contains)}`);
  return found[0].code;
}

let work: string;

/** Runs prelude + code as an ES module in the work directory; its stdout. */
function run(name: string, code: string, prelude = ''): string {
  const file = path.join(work, `${name}.mjs`);
  // Imports are hoisted, so the prelude may come first; it imports under names of its own.
  writeFileSync(file, `import * as __lib from 'lstm-native';\n${prelude}\n${code}\n`);
  const r = spawnSync(process.execPath, ['--no-warnings', file], { cwd: work, encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`README block "${name}" failed (${r.status ?? r.signal}):\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

beforeAll(async () => {
  work = mkdtempSync(path.join(os.tmpdir(), 'lstm-readme-'));
  mkdirSync(path.join(work, 'node_modules'));
  symlinkSync(root, path.join(work, 'node_modules', 'lstm-native'), 'dir');
  // The files the examples read: an nn.LSTM under 'lstm.' (with a head), torch.save files,
  // ONNX exports with and without a head, a TensorFlow.js model with a Dense after it, Keras files.
  copyFileSync(path.join(FIXTURES, 'm01_sine_model.safetensors'), path.join(work, 'model.safetensors'));
  copyFileSync(path.join(FIXTURES, 'torch-save', 'checkpoint.pth'), path.join(work, 'checkpoint.pth'));
  copyFileSync(path.join(FIXTURES, 'torch-save', 'net.pt'), path.join(work, 'net.pt'));
  // np.savez_compressed of a state dict under 'lstm.'
  copyFileSync(path.join(FIXTURES, 'npy', 'state_dict.npz'), path.join(work, 'weights.npz'));
  // Keras model.save files (.keras: two LSTM layers named 'lstm' and 'lstm_1', then a Dense;
  // .h5: an LSTM named 'lstm' and a Dense) and a save_weights one
  copyFileSync(path.join(FIXTURES, 'keras', 'k3_stack_final.keras'), path.join(work, 'model.keras'));
  copyFileSync(path.join(FIXTURES, 'keras', 'k2_seq_dense.h5'), path.join(work, 'model.h5'));
  copyFileSync(path.join(FIXTURES, 'keras', 'k2_weights_only.h5'), path.join(work, 'weights.h5'));
  copyFileSync(path.join(FIXTURES, 'keras', 'k2_weights_only.json'), path.join(work, 'model_config.json'));
  const lstm = new lib.LSTM({ inputSize: 3, hiddenSize: 4, numLayers: 2, seed: 1 });
  writeFileSync(path.join(work, 'model.onnx'), lib.exportOnnx(lstm));
  lstm.dispose();
  const net = new lib.SequenceModel({ inputSize: 3, hiddenSize: 4, outputSize: 2, seed: 2 });
  writeFileSync(path.join(work, 'net.onnx'), lib.exportOnnx(net));
  net.dispose();
  const { json, data } = await tfjsArtifacts((tfl) => {
    const m = tfl.sequential();
    // (tfjs-layers' default orthogonal recurrent initializer fails in Node: glorotNormal instead)
    m.add(tfl.layers.lstm({ name: 'lstm', units: 3, inputShape: [5, 2], returnSequences: true, recurrentInitializer: 'glorotNormal' }));
    m.add(tfl.layers.dense({ units: 2 }));
    return m;
  });
  writeFileSync(path.join(work, 'model.json'), JSON.stringify(json));
  writeFileSync(path.join(work, 'group1-shard1of1.bin'), data);
}, 60_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('README', () => {
  it('the Example runs as written and prints the error its comment shows', () => {
    const code = block('Example', 'loadSafetensors');
    const out = run('example', code);
    const comment = /^\s*\/\/ (LSTM_[A-Z_]+ .*)$/m.exec(code);
    expect(comment).not.toBeNull();
    expect(out.split('\n')).toContain(comment![1]);
    expect(out).toMatch(/engine: '(native|wasm|js)'/);
  });

  it('the streaming snippets run, and stepping equals a forward in chunks', () => {
    const step = block('Async, streaming and threads', 'lstm.initialState(1)');
    const chunks = block('Async, streaming and threads', 'out: { output: y, hn: s.h, cn: s.c }');
    const prelude = `
      const I = 3, T = 4, B = 1;
      const lstm = new __lib.LSTM({ inputSize: I, hiddenSize: 5, numLayers: 2, seed: 3 });
      const Hout = lstm.config.outSize;
      const all = Float32Array.from({ length: 3 * T * I }, (_, i) => Math.sin(i));
      const stream = Array.from({ length: 3 * T }, (_, t) => all.subarray(t * I, (t + 1) * I));
      const chunks = [0, 1, 2].map((k) => ({ data: all.subarray(k * T * I, (k + 1) * T * I), shape: [T, B, I] }));`;
    const check = `
      const ref = lstm.forward({ data: all, shape: [3 * T, 1, I] });
      const last = (t) => Array.from(t.data.subarray(t.data.length - Hout));
      console.log(JSON.stringify([last(out), last(y), last(ref.output), Array.from(state.h.data), Array.from(s.h.data)]));`;
    const [a, b, c, h1, h2] = JSON.parse(run('streaming', `${step}\n${chunks}\n${check}`, prelude).trim().split('\n').pop()!);
    for (const v of [b, c]) expect(v).toEqual(a);
    expect(h2).toEqual(h1);
  });

  it('the Interop example runs as written on the files it names', () => {
    const prelude = `
      const w = (shape) => ({ data: Float32Array.from({ length: shape.reduce((p, q) => p * q, 1) }, (_, i) => Math.cos(i) / 8), shape });
      const keras = (I, U) => ({ kernel: w([I, 4 * U]), recurrentKernel: w([U, 4 * U]), bias: w([4 * U]) });
      const { kernel, recurrentKernel, bias } = keras(3, 64);
      const fw = keras(3, 64), bw = keras(3, 64), layer1 = keras(3, 64), layer2 = keras(64, 64);
      const json = (await import('node:fs')).readFileSync('model.json', 'utf8');
      const weights = (await import('node:fs')).readFileSync('group1-shard1of1.bin');`;
    run('interop', block('Interop: PyTorch, ONNX, Keras', 'loadTorch'), prelude);
  });

  it('the Training example runs as written', () => {
    const prelude = `
      const N = 4, T = 6;
      const rnd = (shape, s = 1) => ({ data: Float32Array.from({ length: shape.reduce((p, q) => p * q, 1) }, (_, i) => s * Math.sin(i * 0.37 + s)), shape });
      const lstm = new __lib.LSTM({ inputSize: 1, hiddenSize: 8, seed: 1 });
      const x = rnd([N, T, 1]), target = rnd([N, T, 1], 0.5), y = target;           // lstm reads x as [T=N, B=T, 1]
      const h0 = rnd([1, T, 8], 0.1), c0 = rnd([1, T, 8], 0.2), lengths = [4, 3, 4, 2, 1, 4], dOut = rnd([N, T, 8], 0.3);
      const validation = { x, y };
      const progress = [];
      const onProgress = (p) => progress.push(p.epoch);
      const signal = new AbortController().signal;
      const context = rnd([T, 1]), sample = rnd([1, 1]);
      const labels = { data: Float32Array.from({ length: N }, (_, i) => i % 3), shape: [N] };`;
    const check = `
      if (!(run.output.shape.length === 3 && g.params.weight_ih_l0 && Number.isFinite(loss) && progress.length > 0)) throw new Error('no training');
      if (next.shape[0] !== 24 || output.shape.join() !== [N, T, 1].join()) throw new Error('shapes ' + next.shape + ' ' + output.shape);
      if (scores.shape.join() !== [N, 3].join()) throw new Error('classifier ' + scores.shape);`;
    run('training', `${block('Training', 'new SequenceModel')}\n${check}`, prelude);
  });

  it('the command-line examples run in order, each optional flag with and without', () => {
    const sh = /^Command line:\n\n```sh\n([\s\S]*?)\n```/m.exec(readme);
    expect(sh).not.toBeNull();
    const lines = sh![1].split('\n').map((l) => l.replace(/\s+#.*$/, '').trim());
    expect(lines.length).toBeGreaterThan(5);
    const dir = path.join(work, 'cli');
    mkdirSync(dir);
    // The files the lines read and have not written before: the LSTM exported, a torch.save
    // checkpoint, a TensorFlow.js model, Keras files, a numpy state dict, a graph with a head,
    // and a model with its LSTM under 'lstm.'.
    for (const [from, to] of [['model.onnx', 'model.onnx'], ['checkpoint.pth', 'checkpoint.pth'], ['model.json', 'model.json'], ['group1-shard1of1.bin', 'group1-shard1of1.bin'], ['model.keras', 'model.keras'], ['weights.h5', 'weights.h5'], ['weights.npz', 'weights.npz'], ['model_config.json', 'model_config.json'], ['net.onnx', 'full.onnx'], ['model.safetensors', 'net.safetensors']]) {
      copyFileSync(path.join(work, from), path.join(dir, to));
    }
    const cli = (args: string[]) => spawnSync(process.execPath, [path.join(root, 'bin', 'lstm-native.cjs'), ...args], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
    for (const line of lines) {
      const m = /^npx lstm-native (.*)$/.exec(line);
      expect(m, line).not.toBeNull();
      const optional = [...m![1].matchAll(/\[([^\]]*)\]/g)].map((r) => r[1].split(' '));
      const required = m![1].replace(/\s*\[[^\]]*\]/g, '').split(' ');
      for (const args of [required, [...required, ...optional.flat()]]) {
        const r = cli(args);
        expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(0);
        if (args[0] === 'convert') expect(readFileSync(path.join(dir, args[2])).length, args.join(' ')).toBeGreaterThan(100);
        if (optional.length === 0) break;
      }
    }
  });

  it('every call the API summary names exists', () => {
    const api = block('API', 'new LSTM({');
    const m = new lib.LSTM({ inputSize: 1, hiddenSize: 2 });
    const names = { methods: [...api.matchAll(/^(?:await )?lstm\.(\w+)/gm)].map((r) => r[1]), statics: [...api.matchAll(/^LSTM\.(\w+)\(/gm)].map((r) => r[1]), functions: [...api.matchAll(/^(?:await )?(\w+)\(/gm)].map((r) => r[1]) };
    expect(names.methods.length).toBeGreaterThanOrEqual(10);
    expect(names.statics.length).toBeGreaterThan(2);
    expect(names.functions.length).toBeGreaterThan(8);
    for (const k of names.methods) expect(m, `lstm.${k}`).toHaveProperty(k);
    for (const k of names.statics) expect(typeof (lib.LSTM as unknown as Record<string, unknown>)[k], `LSTM.${k}`).toBe('function');
    for (const k of names.functions) expect(typeof (lib as Record<string, unknown>)[k], k).toBe('function');
    m.dispose();
  });

  it('npm run bench takes the options it lists, --help prints them, and anything else is a usage error', () => {
    const bench = (...args: string[]) => spawnSync(process.execPath, ['bench/run.mjs', ...args], { cwd: root, encoding: 'utf8', timeout: 60_000 });
    const help = bench('--help');
    expect(help.status).toBe(0);
    for (const o of ['--shapes', '--engines', '--reps', '--quick', '--json']) expect(help.stdout).toContain(o);
    expect(readme).toContain('npm run bench -- --help');
    for (const [args, re] of [[['--bogus'], /Unknown option '--bogus'/], [['--shapes', 'S1,S9'], /unknown shape 'S9'/], [['--engines', 'gpu'], /unknown engine 'gpu'/], [['--reps', '0'], /--reps takes a whole number/]] as const) {
      const r = bench(...args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(re);
      expect(r.stderr).toContain('Usage:');
    }
  });
});
