// Builds the addon with -fsanitize=address,undefined (cmake-js) into a copy of the package
// and runs test/sanitize/harness.cjs under it. Any sanitizer report fails the run
// (UBSan is built with -fno-sanitize-recover=all; ASan aborts on its first error).
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const work = mkdtempSync(path.join(os.tmpdir(), 'lstm-asan-'));
try {
  for (const f of ['package.json', 'dist', 'native', 'CMakeLists.txt']) cpSync(path.join(root, f), path.join(work, f), { recursive: true });
  symlinkSync(path.join(root, 'node_modules'), path.join(work, 'node_modules'));
  execFileSync(process.execPath, [path.join(root, 'node_modules/cmake-js/bin/cmake-js'), 'compile', '--out', 'build', '--CDLSTM_SANITIZE=ON'], { cwd: work, stdio: ['ignore', 'ignore', 'inherit'] });
  mkdirSync(path.join(work, 'build', 'Release'), { recursive: true });
  const lib = (name) => execFileSync('gcc', ['-print-file-name=' + name], { encoding: 'utf8' }).trim();
  const r = spawnSync(process.execPath, ['--expose-gc', path.join(root, 'test/sanitize/harness.cjs'), work], {
    stdio: ['ignore', 'inherit', 'pipe'],
    encoding: 'utf8',
    env: {
      ...process.env,
      LD_PRELOAD: `${lib('libasan.so')} ${lib('libubsan.so')}`,
      // Node itself is not built with ASan: leaks at exit and its own allocator are not ours to judge.
      ASAN_OPTIONS: 'detect_leaks=0:halt_on_error=1:abort_on_error=0',
      UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
    },
  });
  process.stderr.write(r.stderr);
  const reports = (r.stderr.match(/ERROR: AddressSanitizer|runtime error:/g) ?? []).length;
  console.log(`sanitizer reports: ${reports}`);
  process.exit(r.status === 0 && reports === 0 ? 0 : 1);
} finally {
  rmSync(work, { recursive: true, force: true });
}
