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
  convert <in> <out> [--prefix lstm.] [--opset 14] [--lengths]
                 .onnx -> .safetensors (PyTorch names; the options go in the metadata)
                 .safetensors -> .onnx (options from the metadata, else inferred from the names)
  info [file]    a model file's configuration and parameter count; without a file,
                 which engine loads on this machine and why
  rebuild        build the native addon from source here (needs python3, make, a C++17 compiler)
  bench [args]   run the benchmark (same options as npm run bench: --quick, --json, --shapes S1,S2)
  help           this text

exit codes: 0 done, 1 the file or model could not be handled, 2 usage error`;

class UsageError extends Error {}

function lib() {
  return require(path.join(root, 'dist/cjs/index.js'));
}

const kindOf = (file) => {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.onnx') return 'onnx';
  if (ext === '.safetensors') return 'safetensors';
  throw new UsageError(`'${file}': expected a .onnx or .safetensors file`);
};

/** An LSTM from a model file (backend js: conversion needs no native code). */
function loadModel(file, prefix) {
  const { LSTM, loadOnnx, loadSafetensors, inferOptions } = lib();
  const bytes = new Uint8Array(fs.readFileSync(file));
  if (kindOf(file) === 'onnx') return { lstm: loadOnnx(bytes, { backend: 'js' }), source: 'onnx' };
  const { tensors, metadata } = loadSafetensors(bytes);
  const stored = metadata.format === 'lstm-native/1' && metadata.options ? JSON.parse(metadata.options) : null;
  const options = stored ?? inferOptions(tensors, { prefix });
  const lstm = new LSTM({ ...options, backend: 'js' });
  lstm.loadStateDict(tensors, { prefix });
  return { lstm, source: stored ? 'safetensors (lstm-native metadata)' : 'safetensors (options inferred from PyTorch names)' };
}

function convert(args) {
  const [input, output] = args.positionals;
  if (!input || !output) throw new UsageError('convert needs an input and an output file');
  const from = kindOf(input);
  const to = kindOf(output);
  if (from === to) throw new UsageError(`convert: '${input}' and '${output}' are both ${from}`);
  const { saveSafetensors, exportOnnx, optionsOf } = lib();
  const { lstm } = loadModel(input, args.values.prefix);
  let bytes;
  if (to === 'safetensors') {
    bytes = saveSafetensors(lstm.stateDict(), { format: 'lstm-native/1', options: JSON.stringify(optionsOf(lstm)) });
  } else {
    const opset = args.values.opset === undefined ? 14 : Number(args.values.opset);
    bytes = exportOnnx(lstm, { opset, lengths: Boolean(args.values.lengths) });
  }
  fs.writeFileSync(output, bytes);
  console.log(`wrote ${output} (${bytes.length} bytes)`);
  return 0;
}

function info(args) {
  const [file] = args.positionals;
  if (!file) {
    console.log(JSON.stringify(lib().backendInfo(), null, 2));
    return 0;
  }
  const { lstm, source } = loadModel(file, args.values.prefix);
  const { optionsOf } = lib();
  const params = Object.values(lstm.stateDict()).reduce((n, t) => n + t.data.length, 0);
  console.log(JSON.stringify({ file, source, options: optionsOf(lstm), parameters: params }, null, 2));
  return 0;
}

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
    console.error('lstm-native rebuild: the build failed; the WebAssembly (or pure-JS) engine stays in use');
    return r.status || 1;
  }
  const check = spawnSync(process.execPath, ['-e', `const i = require(${JSON.stringify(path.join(root, 'dist/cjs/index.js'))}).backendInfo(); console.log(JSON.stringify(i)); process.exit(i.native ? 0 : 1)`], { stdio: 'inherit' });
  return check.status ?? 1;
}

function main(argv) {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'convert':
      case 'info': {
        const args = parseArgs({
          args: rest,
          allowPositionals: true,
          options: { prefix: { type: 'string', default: '' }, opset: { type: 'string' }, lengths: { type: 'boolean' } },
        });
        return command === 'convert' ? convert(args) : info(args);
      }
      case 'rebuild':
        return rebuild();
      case 'bench': {
        const r = spawnSync(process.execPath, [path.join(root, 'bench', 'run.mjs'), ...rest], { stdio: 'inherit' });
        return r.status ?? 1;
      }
      case undefined:
      case 'help':
        console.log(USAGE);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command '${command}'`);
    }
  } catch (err) {
    if (err instanceof UsageError || (err && err.code && String(err.code).startsWith('ERR_PARSE_ARGS'))) {
      console.error(`lstm-native: ${err.message}\n\n${USAGE}`);
      return 2;
    }
    if (err && typeof err.code === 'string' && err.code.startsWith('LSTM_')) {
      console.error(`lstm-native: ${err.code}: ${err.message}`);
      return 1;
    }
    if (err && err.code === 'ENOENT') {
      console.error(`lstm-native: ${err.message}`);
      return 1;
    }
    throw err;
  }
}

process.exitCode = main(process.argv.slice(2));
