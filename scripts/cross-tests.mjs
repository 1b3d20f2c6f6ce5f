// The C++ kernel tests (native/test/kernel_tests.cc) on the ISAs this x86-64 machine
// cannot run natively: WebAssembly SIMD128 (clang --target=wasm32-wasi, run by Node's
// WASI) and arm64 NEON (aarch64-linux-gnu-g++, run by qemu-aarch64). Each ISA against the
// scalar oracle, as ctest does for AVX2/AVX-512. `--quick` runs the small subset.
// Needs: clang lld wasi-libc libc++-14-dev-wasm32 libc++abi-14-dev-wasm32
// libclang-rt-14-dev-wasm32 (wasm), clang-16 lld-16 libclang-rt-16-dev-wasm32 (wasm with
// relaxed SIMD), g++-aarch64-linux-gnu qemu-user (arm64).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WASI } from 'node:wasi';
import { enableRelaxedSimd, RELAXED_FLAGS, relaxedClang } from './relaxed-simd.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const quick = process.argv.includes('--quick');
const kernels = [];
let section = '';
for (const raw of readFileSync(path.join(root, 'native/sources.txt'), 'utf8').split('\n')) {
  const line = raw.trim();
  const m = /^\[(.+)\]$/.exec(line);
  if (m) section = m[1];
  else if (line && !line.startsWith('#') && section === 'kernels') kernels.push(path.join(root, line));
}
const test = path.join(root, 'native/test/kernel_tests.cc');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'lstm-cross-'));
const args = quick ? ['--quick'] : [];
let failed = false;

try {
  console.log('== kernel tests, wasm32 + SIMD128 (Node WASI)');
  const wasm = path.join(tmp, 'kernel_tests.wasm');
  // peak.cc times FMA chains with std::chrono and is not part of the wasm module.
  const wasmSources = kernels.filter((k) => !k.endsWith('peak.cc'));
  execFileSync('clang++', ['--target=wasm32-wasi', '-std=c++17', '-O2', '-msimd128', '-fno-exceptions', '-Wall', '-Werror', `-I${path.join(root, 'native/kernels')}`, test, ...wasmSources, '-o', wasm], { stdio: 'inherit' });
  const wasi = new WASI({ version: 'preview1', args: ['kernel_tests', ...args], env: {}, returnOnExit: true });
  const instance = await WebAssembly.instantiate(await WebAssembly.compile(readFileSync(wasm)), { wasi_snapshot_preview1: wasi.wasiImport });
  const code = wasi.start(instance);
  if (code !== 0) failed = true;

  // The relaxed-SIMD build (wasm/lstm-relaxed.wasm's kernels): clang 16, as build:wasm uses.
  console.log('== kernel tests, wasm32 + SIMD128 + relaxed SIMD (Node WASI)');
  enableRelaxedSimd();
  const relaxed = path.join(tmp, 'kernel_tests_relaxed.wasm');
  execFileSync(relaxedClang(), ['--target=wasm32-wasi', '-std=c++17', '-O2', '-msimd128', ...RELAXED_FLAGS, '-fno-exceptions', '-Wall', '-Werror', `-I${path.join(root, 'native/kernels')}`, test, ...wasmSources, '-o', relaxed], { stdio: 'inherit' });
  const wasiRelaxed = new WASI({ version: 'preview1', args: ['kernel_tests', ...args], env: {}, returnOnExit: true });
  const instanceRelaxed = await WebAssembly.instantiate(await WebAssembly.compile(readFileSync(relaxed)), { wasi_snapshot_preview1: wasiRelaxed.wasiImport });
  if (wasiRelaxed.start(instanceRelaxed) !== 0) failed = true;

  console.log('== kernel tests, arm64 + NEON (qemu-aarch64)');
  const arm = path.join(tmp, 'kernel_tests_arm64');
  execFileSync('aarch64-linux-gnu-g++', ['-std=c++17', '-O2', '-static', '-pthread', '-Wall', '-Werror', `-I${path.join(root, 'native/kernels')}`, test, ...kernels, '-o', arm], { stdio: 'inherit' });
  try {
    execFileSync('qemu-aarch64', [arm, ...args], { stdio: 'inherit' });
  } catch {
    failed = true;
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
if (failed) {
  console.error('cross kernel tests failed');
  process.exit(1);
}
