// Runs a script against a copy of the built package that has no native binary, in a
// child process, and returns the JSON it prints: proves the pure-JS fallback.
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const root = path.resolve(__dirname, '..');

export function runWithoutBinary(script: string, env: Record<string, string> = {}): any {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lstm-nobin-'));
  try {
    const pkg = path.join(dir, 'node_modules', 'lstm-native');
    mkdirSync(path.join(pkg, 'node_modules'), { recursive: true });
    cpSync(path.join(root, 'dist'), path.join(pkg, 'dist'), { recursive: true });
    cpSync(path.join(root, 'package.json'), path.join(pkg, 'package.json'));
    symlinkSync(path.join(root, 'node_modules', 'node-gyp-build'), path.join(pkg, 'node_modules', 'node-gyp-build'));
    const out = execFileSync(process.execPath, ['-e', script, pkg], {
      cwd: dir,
      env: { ...process.env, LSTM_BACKEND: '', ...env },
      encoding: 'utf8',
    });
    return JSON.parse(out.trim().split('\n').pop()!);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
