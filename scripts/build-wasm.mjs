// Build the WebAssembly engine's two modules: the kernels of native/kernels (the [kernels]
// section of native/sources.txt, less what needs an OS) plus native/wasm/api.cc, for wasm32:
// - wasm/lstm.wasm with SIMD128, which every current host runs. Needs clang and lld with the
//   wasm32 C and C++ libraries (Debian: clang lld wasi-libc libc++-14-dev-wasm32
//   libc++abi-14-dev-wasm32 libclang-rt-14-dev-wasm32).
// - wasm/lstm-relaxed.wasm with relaxed SIMD too (f32x4.relaxed_madd: the GEMM's and the
//   cell's multiply-adds fused where the CPU has FMA). Node 22+ and current browsers run it;
//   Node 20 only with --experimental-wasm-relaxed-simd. Needs clang 16 or newer (Debian:
//   clang-16 lld-16 libclang-rt-16-dev-wasm32; it compiles against the libc++ 14 headers
//   above, since Debian's libc++-16-dev-wasm32 would replace them and change lstm.wasm).
// The modules import nothing; the built files are committed and shipped, so users and
// `npm test` never need this toolchain. `--check` rebuilds to a temporary directory and
// fails when a module differs from the committed one (CI runs that: the binaries match
// their sources).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { enableRelaxedSimd, findClang, RELAXED_FLAGS, relaxedClang } from './relaxed-simd.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const check = process.argv.includes('--check');
const OS_ONLY = new Set(['native/kernels/peak.cc']); // timing loops with std::chrono: not in wasm

function kernelSources() {
  let section = '';
  const out = [];
  for (const raw of readFileSync(path.join(root, 'native/sources.txt'), 'utf8').split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^\[(.+)\]$/.exec(line);
    if (m) section = m[1];
    else if (section === 'kernels' && !OS_ONLY.has(line)) out.push(line);
  }
  return [...out, 'native/wasm/api.cc'];
}

enableRelaxedSimd();

const modules = [
  {
    file: 'lstm.wasm',
    clang: () =>
      findClang(
        [process.env.CLANGXX, 'clang++', 'clang++-14'],
        'clang++ with wasm32 support for build:wasm (Debian: apt-get install clang lld wasi-libc libc++-14-dev-wasm32 libc++abi-14-dev-wasm32 libclang-rt-14-dev-wasm32)',
      ),
    flags: [],
  },
  {
    file: 'lstm-relaxed.wasm',
    clang: relaxedClang,
    flags: RELAXED_FLAGS,
  },
];

const tmp = mkdtempSync(path.join(os.tmpdir(), 'lstm-wasm-'));
function args(m, target) {
  return [
    '--target=wasm32-wasi',
    '-std=c++17',
    '-O3',
    // No loop strength reduction: it rewrites the GEMM kernel's panel addresses as integer
    // induction variables, so the constant offsets no longer fold into the loads' offset
    // immediates and V8 computes every address with its own instruction. Without it the
    // kernel's loop is 3 instructions shorter; in-process A/B in Node 20: GEMMs +5-12%, S3
    // forward +7-12%, S2 +1-7%, same bits.
    '-mllvm',
    '-disable-lsr',
    '-msimd128',
    ...m.flags,
    '-mbulk-memory',
    '-fno-exceptions',
    '-fno-rtti',
    '-ffp-contract=off',
    '-DNDEBUG',
    '-Wall',
    '-Wextra',
    '-Werror',
    '-nostartfiles',
    '-Wl,--no-entry',
    '-Wl,--strip-all',
    '-Wl,--max-memory=4294967296',
    '-Wl,-z,stack-size=262144',
    '-o',
    target,
    ...kernelSources().map((s) => path.join(root, s)),
  ];
}
try {
  for (const m of modules) {
    const outFile = path.join(root, 'wasm', m.file);
    const target = check ? path.join(tmp, m.file) : outFile;
    execFileSync(m.clang(), args(m, target), { stdio: 'inherit', cwd: root });
    const bytes = readFileSync(target);
    const mod = new WebAssembly.Module(bytes);
    const imports = WebAssembly.Module.imports(mod);
    if (imports.length > 0) throw new Error(`wasm/${m.file} must import nothing, it imports ${imports.map((i) => `${i.module}.${i.name}`).join(', ')}`);
    if (check) {
      const committed = readFileSync(outFile);
      if (!committed.equals(bytes)) {
        throw new Error(`wasm/${m.file} differs from what its sources build: run \`npm run build:wasm\` and commit the result`);
      }
      console.log(`wasm/${m.file} matches its sources (${bytes.length} bytes)`);
    } else {
      console.log(`wrote wasm/${m.file} (${bytes.length} bytes)`);
    }
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
