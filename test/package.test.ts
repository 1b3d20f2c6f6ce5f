// The npm package as users get it: pack, install into an empty project with no compiler
// reachable, and check which engine loads. Works on a copy of the package, so the
// working tree's build/ is never touched while other test files run.
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = path.resolve(__dirname, '..');
const pkgJson = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
let work: string;
let tarball: string;
let tarballNoPrebuilds: string;
let noCompilerPath: string;

function which(cmd: string): string {
  return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim();
}

/** npm with PATH = node, npm and sh only, and CC/CXX pointing nowhere. */
function npmNoCompiler(cwd: string, args: string[]) {
  return spawnSync('npm', args, {
    cwd,
    encoding: 'utf8',
    env: { HOME: process.env.HOME ?? os.homedir(), PATH: noCompilerPath, CC: '/nonexistent/cc', CXX: '/nonexistent/c++', npm_config_audit: 'false', npm_config_fund: 'false' },
  });
}

function nodeIn(cwd: string, script: string, env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, ['-e', script], { cwd, encoding: 'utf8', env: { PATH: noCompilerPath, ...env } });
  return { ...r, json: r.status === 0 ? JSON.parse(r.stdout.trim().split('\n').pop()!) : null };
}

function app(name: string, extra: object = {}): string {
  const dir = path.join(work, name);
  mkdirSync(dir);
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true, ...extra }));
  return dir;
}

const PROBE = `
  const lstm = require('lstm-native');
  const info = lstm.backendInfo();
  const m = new lstm.LSTM({ inputSize: 3, hiddenSize: 5, seed: 1 });
  const r = m.forward({ data: new Float32Array(12).fill(0.25), shape: [4, 3] });
  let nativeCode = null;
  try { new lstm.LSTM({ inputSize: 3, hiddenSize: 5, backend: 'native' }); } catch (e) { nativeCode = e.code; }
  console.log(JSON.stringify({ info, backend: m.backend, out: Array.from(r.output.data), nativeCode }));`;

beforeAll(() => {
  work = mkdtempSync(path.join(os.tmpdir(), 'lstm-pack-'));
  const bin = path.join(work, 'bin');
  mkdirSync(bin);
  for (const cmd of ['node', 'npm', 'sh']) symlinkSync(which(cmd), path.join(bin, cmd));
  noCompilerPath = bin;
  // A copy of what the package ships, plus node_modules for prebuildify.
  const src = path.join(work, 'src');
  mkdirSync(src);
  for (const f of [...pkgJson.files, 'package.json', 'scripts/prebuild.mjs']) {
    if (existsSync(path.join(root, f)) && f !== 'prebuilds') cpSync(path.join(root, f), path.join(src, f), { recursive: true });
  }
  symlinkSync(path.join(root, 'node_modules'), path.join(src, 'node_modules'));
  execFileSync(process.execPath, ['scripts/prebuild.mjs', '--host-only'], { cwd: src, stdio: 'pipe' });
  execFileSync('npm', ['pack', '--pack-destination', work], { cwd: src, stdio: 'pipe' });
  tarball = path.join(work, `lstm-native-${pkgJson.version}.tgz`);
  rmSync(path.join(src, 'prebuilds'), { recursive: true, force: true });
  const noPre = path.join(work, 'nopre');
  mkdirSync(noPre);
  execFileSync('npm', ['pack', '--pack-destination', noPre], { cwd: src, stdio: 'pipe' });
  tarballNoPrebuilds = path.join(noPre, `lstm-native-${pkgJson.version}.tgz`);
}, 300_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('the npm package', () => {
  it('is under 5 MB and carries the prebuild, both entry points, the sources and the CLI', () => {
    const size = statSync(tarball).size;
    expect(size).toBeLessThan(5 * 1024 * 1024);
    const files = execFileSync('tar', ['tzf', tarball], { encoding: 'utf8' }).split('\n');
    for (const f of [`prebuilds/${process.platform}-${process.arch}/lstm-native.node`, 'dist/esm/index.mjs', 'dist/cjs/index.js', 'dist/cjs/index.d.ts', 'wasm/lstm.wasm', 'wasm/lstm-relaxed.wasm', 'binding.gyp', 'native/kernels/layer.cc', 'native/addon/addon.cc', 'bin/lstm-native.cjs', 'scripts/install.cjs', 'bench/run.mjs', 'scripts/relaxed-simd.mjs', 'LICENSE']) {
      expect(files, f).toContain(`package/${f}`);
    }
    expect(files.some((f) => f.startsWith('package/test/'))).toBe(false);
  });

  it('with a prebuild and the install script not run (as npm 12 does unless approved), no compiler: native loads', () => {
    const dir = app('with-prebuild');
    const r = npmNoCompiler(dir, ['install', tarball, '--prefer-offline', '--ignore-scripts', '--foreground-scripts']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout + r.stderr).not.toMatch(/gyp|lstm-native@/); // our script printed nothing: it did not run
    expect(existsSync(path.join(dir, 'node_modules/lstm-native/build'))).toBe(false);
    const probe = nodeIn(dir, PROBE, { PREBUILDS_ONLY: '1' });
    expect(probe.status, probe.stderr).toBe(0);
    expect(probe.json.info.native).toBe(true);
    expect(probe.json.backend).toBe('native');
  });

  it('with a prebuild and the install script approved: it finds the prebuild and compiles nothing', () => {
    const dir = app('approved', { allowScripts: { 'lstm-native': true } });
    const r = npmNoCompiler(dir, ['install', tarball, '--prefer-offline', '--foreground-scripts']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout + r.stderr).not.toMatch(/gyp/);
    expect(existsSync(path.join(dir, 'node_modules/lstm-native/build'))).toBe(false);
    expect(nodeIn(dir, PROBE).json.backend).toBe('native');
  });

  it('without prebuilds and without a compiler: the install still succeeds and the wasm engine serves', () => {
    const dir = app('no-prebuild', { allowScripts: { 'lstm-native': true } });
    const r = npmNoCompiler(dir, ['install', tarballNoPrebuilds, '--prefer-offline', '--foreground-scripts']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout + r.stderr).toMatch(/lstm-native: no prebuilt binary .* WebAssembly engine will be used/);
    const probe = nodeIn(dir, PROBE);
    expect(probe.status, probe.stderr).toBe(0);
    expect(probe.json.info.native).toBe(false);
    expect(probe.json.info.reason).toMatch(/no native binary for/);
    expect(probe.json.info.engine).toBe('wasm');
    expect(probe.json.backend).toBe('wasm');
    expect(probe.json.nativeCode).toBe('LSTM_NATIVE');
    // LSTM_BACKEND=native makes 'auto' demand native: it says why it cannot.
    const forced = nodeIn(dir, `try { new (require('lstm-native').LSTM)({ inputSize: 1, hiddenSize: 1 }); console.log('{}'); } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`, { LSTM_BACKEND: 'native' });
    expect(forced.json.code).toBe('LSTM_NATIVE');
    expect(forced.json.message).toMatch(/no native binary/);
    // The same numbers as the native engine gives.
    const withPrebuild = nodeIn(path.join(work, 'with-prebuild'), PROBE);
    const a = probe.json.out as number[];
    const b = withPrebuild.json.out as number[];
    a.forEach((v, i) => expect(Math.abs(v - b[i])).toBeLessThan(1e-6));
  });

  it('the wasm engine takes the relaxed-SIMD build where the host runs it, and SIMD128 when that file is missing', () => {
    const dir = path.join(work, 'no-prebuild');
    const script = `
      const lstm = require('lstm-native');
      lstm.initWasm().then(() => {
        const m = new lstm.LSTM({ inputSize: 3, hiddenSize: 5, seed: 1 });
        const r = m.forward({ data: new Float32Array(12).fill(0.25), shape: [4, 3] });
        console.log(JSON.stringify({ backend: m.backend, simd: lstm.backendInfo().wasmSimd, out: Array.from(r.output.data) }));
      });`;
    const run = () => {
      const r = spawnSync(process.execPath, ['--experimental-wasm-relaxed-simd', '-e', script], { cwd: dir, encoding: 'utf8', env: { PATH: noCompilerPath } });
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout.trim().split('\n').pop()!);
    };
    const relaxed = run();
    expect(relaxed.backend).toBe('wasm');
    expect(relaxed.simd).toBe('relaxed');
    rmSync(path.join(dir, 'node_modules/lstm-native/wasm/lstm-relaxed.wasm'));
    const fallback = run();
    expect(fallback.simd).toBe('simd128');
    (relaxed.out as number[]).forEach((v, i) => expect(Math.abs(v - fallback.out[i])).toBeLessThan(1e-6));
  });

  it('LSTM_BACKEND=js forces the js engine even where native loads', () => {
    const probe = nodeIn(path.join(work, 'with-prebuild'), PROBE, { LSTM_BACKEND: 'js' });
    expect(probe.json.info.native).toBe(true);
    expect(probe.json.backend).toBe('js');
  });

  it('the CLI answers usage errors with exit code 2 and prints backend info', () => {
    const dir = path.join(work, 'with-prebuild');
    const cli = path.join(dir, 'node_modules/lstm-native/bin/lstm-native.cjs');
    const bad = spawnSync(process.execPath, [cli, 'frobnicate'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/unknown command 'frobnicate'/);
    const info = spawnSync(process.execPath, [cli, 'info'], { encoding: 'utf8' });
    expect(info.status).toBe(0);
    expect(JSON.parse(info.stdout).native).toBe(true);
  });
});
