#!/usr/bin/env node
// lstm-native command line: rebuild | info | bench
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');

const root = path.resolve(__dirname, '..');
const USAGE = `usage: lstm-native <command>

commands:
  rebuild        build the native addon from source here (needs python3, make, a C++17 compiler)
  info           print which engine loads on this machine and why
  bench [args]   run the benchmark (same options as npm run bench: --quick, --json, --shapes S1,S2)
  help           this text`;

/** node-gyp: ours if installed, else the one npm ships. */
function findNodeGyp() {
  const candidates = [];
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js'));
  } catch {}
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp);
  candidates.push(path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  return candidates.find((c) => fs.existsSync(c));
}

function rebuild() {
  const gyp = findNodeGyp();
  if (!gyp) {
    console.error('lstm-native rebuild: node-gyp not found (install it with npm install -g node-gyp)');
    return 1;
  }
  const r = spawnSync(process.execPath, [gyp, 'rebuild'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error('lstm-native rebuild: the build failed; the pure-JS engine stays in use');
    return r.status || 1;
  }
  const check = spawnSync(process.execPath, ['-e', `const i = require(${JSON.stringify(path.join(root, 'dist/cjs/index.js'))}).backendInfo(); console.log(JSON.stringify(i)); process.exit(i.native ? 0 : 1)`], { stdio: 'inherit' });
  return check.status ?? 1;
}

function main(argv) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, strict: false });
  } catch (err) {
    console.error(`lstm-native: ${err.message}\n\n${USAGE}`);
    return 2;
  }
  const [command, ...rest] = parsed.positionals;
  switch (command) {
    case 'rebuild':
      return rebuild();
    case 'info': {
      const { backendInfo } = require(path.join(root, 'dist/cjs/index.js'));
      console.log(JSON.stringify(backendInfo(), null, 2));
      return 0;
    }
    case 'bench': {
      const r = spawnSync(process.execPath, [path.join(root, 'bench', 'run.mjs'), ...argv.slice(1)], { stdio: 'inherit' });
      return r.status ?? 1;
    }
    case undefined:
    case 'help':
      console.log(USAGE);
      return command === undefined ? 2 : 0;
    default:
      void rest;
      console.error(`lstm-native: unknown command '${command}'\n\n${USAGE}`);
      return 2;
  }
}

process.exitCode = main(process.argv.slice(2));
