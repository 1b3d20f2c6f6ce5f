// What the build, the cross tests, the test suite and the bench share about WebAssembly
// relaxed SIMD (wasm/lstm-relaxed.wasm). The package ships this file for bench/run.mjs;
// lib/wasm/module.ts carries its own copy of the probe (lib/ compiles on its own).
import { execFileSync } from 'node:child_process';
import v8 from 'node:v8';

/** A module of one function using f32x4.relaxed_madd: valid only where relaxed SIMD is. */
export const RELAXED_PROBE = new Uint8Array([
  0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 1, 8, 1, 0x60, 3, 0x7b, 0x7b, 0x7b, 1, 0x7b, 3, 2, 1, 0, 0x0a, 0x0d, 1, 0x0b, 0,
  0x20, 0, 0x20, 1, 0x20, 2, 0xfd, 0x85, 0x02, 0x0b,
]);

/**
 * Node 20 validates relaxed SIMD only behind a flag (Node 22+ has it on): set it, before
 * anything compiles. Returns whether the host had it on by default.
 */
export function enableRelaxedSimd() {
  const byDefault = WebAssembly.validate(RELAXED_PROBE);
  if (!byDefault) v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
  return byDefault;
}

/** The first of `names` that runs, else an Error saying what to install. */
export function findClang(names, hint) {
  for (const cc of names.filter(Boolean)) {
    try {
      execFileSync(cc, ['--version'], { stdio: 'ignore' });
      return cc;
    } catch {
      // try the next name
    }
  }
  throw new Error(`needs ${hint}`);
}

/** clang 16 or newer: the first with f32x4.relaxed_madd's final encoding. */
export function relaxedClang() {
  return findClang(
    [process.env.CLANGXX_RELAXED, 'clang++-16', 'clang++-17', 'clang++-18', 'clang++-19'],
    'clang++ 16 or newer for relaxed SIMD (Debian: apt-get install clang-16 lld-16 libclang-rt-16-dev-wasm32)',
  );
}

/**
 * Its flags for wasm32: relaxed SIMD, and the wasm32 libc++ headers that clang 16 does not
 * search by itself (Debian's libc++-14-dev-wasm32: libc++-16-dev-wasm32 would replace them,
 * and with them the bytes of wasm/lstm.wasm).
 */
export const RELAXED_FLAGS = ['-mrelaxed-simd', '-isystem', '/usr/include/wasm32-wasi/c++/v1'];
