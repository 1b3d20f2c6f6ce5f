#!/usr/bin/env node
// lstm-native command line: convert | info | train | rebuild | bench
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');

const root = path.resolve(__dirname, '..');
const USAGE = `usage: lstm-native <command>

commands:
  convert <in> <out> [--prefix lstm.] [--opset 14] [--lengths] [--stack-only] [--layers a,b] [--model-config f]
                 .onnx -> .safetensors (PyTorch names; the options go in the metadata)
                 .safetensors -> .onnx (options from the metadata, else inferred from the names;
                 a checkpoint from train converts whole, the LSTM with its Linear head)
                 .pt / .pth / .bin (torch.save of a state dict, checkpoint or model;
                 torch.jit.save) -> either,
                 options inferred from the names under --prefix (e.g. --prefix model.lstm.);
                 -> .pt writes a state dict torch.load reads;
                 .npz (np.savez of a state dict) -> either, as .pt; -> .npz writes one np.load reads;
                 model.json (TensorFlow.js layers model, shards beside it), .keras or .h5
                 (Keras model.save) -> either, --layers a,b to choose its LSTM layers;
                 a weights-only .h5 (save_weights) with --model-config config.json
                 (model.to_json() saved to a file)
                 --stack-only: the LSTM out of an ONNX graph with more after it (e.g. a head)
  info [file] [--stack-only] [--layers a,b] [--model-config f]
                 a model file's configuration and parameter count (a checkpoint's head
                 too); without a file,
                 which engine loads on this machine and why
  train <data.safetensors|data.npz> <out.safetensors> [--hidden 32] [--layers 1] [--dropout 0] [--epochs 10]
        [--batch 32] [--lr 0.001] [--optimizer adam|adamw|sgd|rmsprop|adagrad]
        [--loss mse|l1|huber|bceWithLogits|crossEntropy]
        [--schedule none|cosine|plateau|onecycle] [--warmup N] [--patience 10] [--early-stop N]
        [--classes K] [--tbptt N] [--val 0.1] [--seed N] [--resume checkpoint.safetensors]
        [--output-mode sequence|last|final]
                 train an LSTM + linear head (SequenceModel) on x [N, T, I] and y [N, T, O]
                 (mse, l1, huber, bceWithLogits) or [N, T] class indices (crossEntropy),
                 or with --output-mode last|final one target per sequence, y [N, O] or [N],
                 optional lengths [N]; shows a progress bar; writes a checkpoint (model +
                 optimizer, options in its metadata). Ctrl-C stops after the current step and still writes it.
                 --schedule cosine anneals the rate to 0 over the epochs (CosineAnnealingLR);
                 plateau divides it by 10 after --patience epochs without a better
                 validation loss (ReduceLROnPlateau); onecycle rises to --lr and anneals
                 far below it, stepped every batch (OneCycleLR); --warmup N first raises
                 the rate linearly from a tenth over N epochs (LinearLR, then the schedule
                 in a SequentialLR); --early-stop N stops after N epochs without a better
                 validation loss and keeps the best epoch's weights
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
  if (ext === '.pt' || ext === '.pth' || ext === '.bin') return 'torch';
  if (ext === '.npz') return 'npz';
  if (ext === '.json') return 'tfjs';
  if (ext === '.keras' || ext === '.h5' || ext === '.hdf5') return 'keras';
  throw new UsageError(`'${file}': expected a .onnx, .safetensors, .pt / .pth / .bin (torch.save), .npz (numpy), model.json (TensorFlow.js) or .keras / .h5 (Keras) file`);
};

/**
 * An LSTM from a model file (backend js: conversion needs no native code); for a checkpoint
 * (what train writes), the SequenceModel too, its LSTM and Linear head.
 */
function loadModel(file, prefix, stackOnly, layers, modelConfig) {
  const { LSTM, SequenceModel, loadOnnx, loadSafetensors, loadTorch, loadNpz } = lib();
  const layerNames = layers ? layers.split(',') : undefined; // --layers, for TensorFlow.js and Keras models
  if (kindOf(file) === 'tfjs') {
    // model.json names its weight shards; they sit beside it. Text that is not JSON goes to
    // fromTfjs as it is, which refuses it with LSTM_FORMAT.
    let json = fs.readFileSync(file, 'utf8');
    try {
      json = JSON.parse(json);
    } catch {}
    const manifest = json !== null && Array.isArray(json.weightsManifest) ? json.weightsManifest : [];
    const shards = manifest.flatMap((g) => (Array.isArray(g?.paths) ? g.paths : []));
    const data = Buffer.concat(shards.map((p) => fs.readFileSync(path.join(path.dirname(file), String(p)))));
    const lstm = LSTM.fromTfjs(json, new Uint8Array(data.buffer, data.byteOffset, data.byteLength), { backend: 'js', layers: layerNames });
    return { lstm, source: 'TensorFlow.js layers model' };
  }
  const bytes = new Uint8Array(fs.readFileSync(file));
  if (kindOf(file) === 'keras') {
    // a weights-only file takes its config from --model-config (model.to_json() saved as a file)
    const config = modelConfig === undefined ? undefined : fs.readFileSync(modelConfig, 'utf8');
    const lstm = LSTM.fromKerasFile(bytes, { backend: 'js', layers: layerNames, modelConfig: config });
    return { lstm, source: `Keras model file (${path.extname(file).toLowerCase()})` };
  }
  if (kindOf(file) === 'onnx') return { lstm: loadOnnx(bytes, { backend: 'js', stackOnly }), source: 'onnx' };
  if (kindOf(file) === 'torch' || kindOf(file) === 'npz') {
    const { tensors } = kindOf(file) === 'torch' ? loadTorch(bytes) : loadNpz(bytes);
    const lstm = LSTM.fromStateDict(tensors, { prefix, backend: 'js' });
    return { lstm, source: `${kindOf(file) === 'torch' ? 'torch.save' : 'numpy .npz'} (options inferred from PyTorch names)` };
  }
  const format = loadSafetensors(bytes).metadata.format;
  if (format === 'lstm-native-checkpoint/1') {
    const model = SequenceModel.fromCheckpoint(bytes, { backend: 'js' });
    return { lstm: model.lstm, model, source: 'checkpoint (LSTM and Linear head, options in the metadata)' };
  }
  const stored = format === 'lstm-native/1';
  const lstm = LSTM.fromSafetensors(bytes, { prefix, backend: 'js' });
  return { lstm, source: stored ? 'safetensors (lstm-native metadata)' : 'safetensors (options inferred from PyTorch names)' };
}

function convert(args) {
  const [input, output] = args.positionals;
  if (!input || !output) throw new UsageError('convert needs an input and an output file');
  const from = kindOf(input);
  const to = kindOf(output);
  if (from === to) throw new UsageError(`convert: '${input}' and '${output}' are both ${from}`);
  const { saveTorch, saveNpz, exportOnnx } = lib();
  if (to === 'tfjs' || to === 'keras') throw new UsageError(`convert: writing ${to === 'tfjs' ? 'TensorFlow.js' : 'Keras'} models is not supported; write .onnx, .safetensors, .pt or .npz`);
  const { lstm, model } = loadModel(input, args.values.prefix, Boolean(args.values['stack-only']), args.values.layers, args.values['model-config']);
  // A checkpoint converts whole: the LSTM with its head (names lstm.* and head.*).
  let bytes;
  if (to === 'safetensors') {
    bytes = model ? model.saveCheckpoint() : lstm.toSafetensors();
  } else if (to === 'torch') {
    bytes = saveTorch((model ?? lstm).stateDict()); // torch.load gives the state dict (options are not kept)
  } else if (to === 'npz') {
    bytes = saveNpz((model ?? lstm).stateDict()); // np.load gives the state dict's arrays
  } else {
    const opset = args.values.opset === undefined ? 14 : Number(args.values.opset);
    bytes = exportOnnx(model ?? lstm, { opset, lengths: Boolean(args.values.lengths) });
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
  const { lstm, model, source } = loadModel(file, args.values.prefix, Boolean(args.values['stack-only']), args.values.layers, args.values['model-config']);
  const { optionsOf } = lib();
  const params = Object.values((model ?? lstm).stateDict()).reduce((n, t) => n + t.data.length, 0);
  const head = model ? { head: { outputSize: model.head.outFeatures, outputMode: model.outputMode } } : {};
  console.log(JSON.stringify({ file, source, options: optionsOf(lstm), ...head, parameters: params }, null, 2));
  return 0;
}

function progressBar(fraction, width = 24) {
  const full = Math.max(0, Math.min(width, Math.round(fraction * width)));
  return `[${'#'.repeat(full)}${'.'.repeat(width - full)}]`;
}

/** Rows [from, to) of a samples-first tensor. */
function sliceSamples(t, from, to) {
  const per = t.shape.slice(1).reduce((a, b) => a * b, 1);
  return { data: t.data.slice(from * per, to * per), shape: [to - from, ...t.shape.slice(1)] };
}

async function train(args) {
  const [input, output] = args.positionals;
  if (!input || !output) throw new UsageError('train needs a data file and an output file');
  if (!['safetensors', 'npz'].includes(kindOf(input)) || kindOf(output) !== 'safetensors') throw new UsageError('train: the data is a .safetensors or .npz file, the output a .safetensors file');
  const { SequenceModel, Adam, AdamW, SGD, RMSprop, Adagrad, CosineAnnealingLR, ReduceLROnPlateau, LinearLR, OneCycleLR, SequentialLR, loadSafetensors, loadNpz, backendInfo, LstmError } = lib();
  const v = args.values;
  const int = (name, dflt, min = 1) => {
    if (v[name] === undefined) return dflt;
    const n = Number(v[name]);
    if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name}: expected an integer >= ${min}, got '${v[name]}'`);
    return n;
  };
  const num = (name, dflt, lo, hi) => {
    if (v[name] === undefined) return dflt;
    const n = Number(v[name]);
    if (!(n >= lo && n <= hi)) throw new UsageError(`--${name}: expected a number in [${lo}, ${hi}], got '${v[name]}'`);
    return n;
  };
  const loss = v.loss ?? 'mse';
  const LOSSES = ['mse', 'l1', 'huber', 'bceWithLogits', 'crossEntropy'];
  if (!LOSSES.includes(loss)) throw new UsageError(`--loss: expected ${LOSSES.slice(0, -1).join(', ')} or crossEntropy, got '${loss}'`);
  const optName = v.optimizer ?? 'adam';
  if (!['adam', 'adamw', 'sgd', 'rmsprop', 'adagrad'].includes(optName)) throw new UsageError(`--optimizer: expected adam, adamw, sgd, rmsprop or adagrad, got '${optName}'`);
  const schedule = v.schedule ?? 'none';
  if (!['none', 'cosine', 'plateau', 'onecycle'].includes(schedule)) throw new UsageError(`--schedule: expected none, cosine, plateau or onecycle, got '${schedule}'`);

  const outputMode = v['output-mode'] ?? 'sequence';
  if (!['sequence', 'last', 'final'].includes(outputMode)) throw new UsageError(`--output-mode: expected sequence, last or final, got '${outputMode}'`);
  if (outputMode !== 'sequence' && v.tbptt !== undefined) throw new UsageError('--tbptt: with --output-mode last or final only the last window would have a target');

  const dataBytes = new Uint8Array(fs.readFileSync(input));
  const { tensors } = kindOf(input) === 'npz' ? loadNpz(dataBytes) : loadSafetensors(dataBytes);
  const { x, y } = tensors;
  if (!x || !y) throw new LstmError('LSTM_FORMAT', `${input}: expected tensors 'x' [N, T, I] and 'y'`);
  if (x.shape.length !== 3) throw new LstmError('LSTM_SHAPE', `x: expected [N, T, I], got [${x.shape.join(', ')}]`);
  const [N, T, I] = x.shape;
  let outputSize;
  if (loss !== 'crossEntropy') {
    const want = outputMode === 'sequence' ? 3 : 2;
    if (y.shape.length !== want) throw new LstmError('LSTM_SHAPE', `y: expected ${want === 3 ? '[N, T, O]' : `[N, O] (one target per sequence: --output-mode ${outputMode})`} for ${loss}, got [${y.shape.join(', ')}]`);
    outputSize = y.shape[want - 1];
  } else {
    let max = 0;
    for (const c of y.data) max = Math.max(max, c);
    outputSize = int('classes', max + 1);
  }
  const lengths = tensors.lengths ? Array.from(tensors.lengths.data, Math.round) : undefined;
  const valFraction = num('val', 0.1, 0, 0.9);
  const nVal = N > 1 ? Math.floor(N * valFraction) : 0;
  const split = (from, to) => ({ x: sliceSamples(x, from, to), y: sliceSamples(y, from, to), lengths: lengths && lengths.slice(from, to) });
  const trainSet = split(0, N - nVal);
  const validation = nVal > 0 ? split(N - nVal, N) : undefined;

  const seed = v.seed === undefined ? undefined : int('seed', 0, 0);
  const model = new SequenceModel({ inputSize: I, hiddenSize: int('hidden', 32), numLayers: int('layers', 1), dropout: num('dropout', 0, 0, 0.95), outputSize, outputMode, batchFirst: true, seed });
  const lr = num('lr', ['sgd', 'rmsprop', 'adagrad'].includes(optName) ? 0.01 : 1e-3, 0, 10);
  const Opt = { adam: Adam, adamw: AdamW, sgd: SGD, rmsprop: RMSprop, adagrad: Adagrad }[optName];
  const optimizer = new Opt(model.parameters(), { lr });
  if (v.resume) {
    model.loadCheckpoint(new Uint8Array(fs.readFileSync(v.resume)), optimizer);
    if (v.lr !== undefined) optimizer.lr = lr; // the rate asked for, not the checkpoint's
  }

  const epochs = int('epochs', 10);
  const batchSize = int('batch', 32);
  const warmup = v.warmup === undefined ? 0 : int('warmup', 1);
  if (warmup > 0 && schedule === 'onecycle') throw new UsageError('--warmup: onecycle warms up by itself');
  if (warmup > 0 && schedule === 'plateau') throw new UsageError('--warmup: plateau cannot follow a warm-up (it watches the loss, not the epoch)');
  if (warmup > 0 && warmup >= epochs) throw new UsageError(`--warmup: expected fewer epochs than --epochs (${epochs}), got ${warmup}`);
  // The warm-up is made first, as in PyTorch (the schedules after it start from the same base rate).
  const warm = warmup > 0 ? new LinearLR(optimizer, { startFactor: 0.1, totalIters: warmup }) : undefined;
  const main =
    schedule === 'cosine' ? new CosineAnnealingLR(optimizer, { tMax: epochs - warmup })
    : schedule === 'plateau' ? new ReduceLROnPlateau(optimizer, { patience: int('patience', 10, 0) })
    : schedule === 'onecycle' ? new OneCycleLR(optimizer, { maxLr: lr, epochs, stepsPerEpoch: Math.ceil((N - nVal) / batchSize), cycleMomentum: optName !== 'adagrad' })
    : undefined;
  const scheduler = warm && main ? new SequentialLR(optimizer, { schedulers: [warm, main], milestones: [warmup] }) : warm ?? main;
  const info = backendInfo();
  const tty = process.stderr.isTTY;
  console.error(`training on ${N - nVal} sequences of ${T} steps (${nVal} held out), engine ${info.engine}${info.isa ? ` (${info.isa})` : ''}`);
  const controller = new AbortController();
  const onSigint = () => {
    console.error('\nstopping after this step (Ctrl-C again to quit at once)');
    controller.abort();
    process.once('SIGINT', () => process.exit(130));
  };
  process.once('SIGINT', onSigint);
  const started = Date.now();
  let lastLine = '';
  const result = await model.fit(trainSet, {
    optimizer,
    scheduler,
    schedulerStep: schedule === 'onecycle' ? 'batch' : 'epoch',
    epochs,
    batchSize,
    loss,
    seed,
    tbptt: v.tbptt === undefined ? undefined : int('tbptt', 1),
    earlyStopping: v['early-stop'] === undefined ? undefined : { patience: int('early-stop', 1) },
    validation,
    signal: controller.signal,
    onProgress: (p) => {
      const done = (p.epoch - 1 + p.step / p.stepsPerEpoch) / p.epochs;
      const eta = done > 0 ? ((Date.now() - started) / 1000) * (1 / done - 1) : 0;
      const line = `epoch ${String(p.epoch).padStart(String(p.epochs).length)}/${p.epochs} ${progressBar(p.step / p.stepsPerEpoch)} loss ${p.loss.toFixed(5)}` +
        `${p.valLoss !== undefined ? ` val ${p.valLoss.toFixed(5)}` : ''}${scheduler ? ` lr ${p.lr.toPrecision(3)}` : ''} ${Math.round(p.samplesPerSecond)} seq/s eta ${Math.ceil(eta)}s`;
      // The epoch's last report (after validation, if any) carries its mean loss: keep it.
      const epochEnd = p.step === p.stepsPerEpoch && (p.valLoss !== undefined || !validation);
      if (tty) process.stderr.write(`\r${line.padEnd(lastLine.length)}${epochEnd ? '\n' : ''}`);
      else if (epochEnd) console.error(line);
      lastLine = epochEnd ? '' : line;
    },
  });
  process.removeListener('SIGINT', onSigint);
  const meta = { options: JSON.stringify({ inputSize: I, hiddenSize: model.lstm.hiddenSize, numLayers: model.lstm.numLayers, dropout: model.lstm.config.dropout || undefined, outputSize, outputMode: outputMode === 'sequence' ? undefined : outputMode, batchFirst: true }), loss, epochs: String(result.history.length) };
  const bytes = model.saveCheckpoint(optimizer, meta);
  fs.writeFileSync(output, bytes);
  // the epoch whose weights it wrote: the best one when it stopped early
  const last = result.stoppedEarly ? result.history[result.bestEpoch - 1] : result.history[result.history.length - 1];
  const early = result.stoppedEarly ? ` (stopped early; kept epoch ${result.bestEpoch}, the best)` : '';
  console.log(`${result.aborted ? 'stopped' : 'trained'} after ${result.history.length} epoch(s)${early} in ${((Date.now() - started) / 1000).toFixed(1)} s` +
    `${last ? `: loss ${last.loss.toFixed(5)}${last.valLoss !== undefined ? `, validation ${last.valLoss.toFixed(5)}` : ''}` : ''}; wrote ${output} (${bytes.length} bytes)`);
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

async function main(argv) {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'train': {
        const str = { type: 'string' };
        const args = parseArgs({
          args: rest,
          allowPositionals: true,
          options: { hidden: str, layers: str, dropout: str, epochs: str, batch: str, lr: str, optimizer: str, loss: str, schedule: str, warmup: str, patience: str, 'output-mode': str, 'early-stop': str, classes: str, tbptt: str, val: str, seed: str, resume: str },
        });
        return await train(args);
      }
      case 'convert':
      case 'info': {
        const args = parseArgs({
          args: rest,
          allowPositionals: true,
          options: { prefix: { type: 'string', default: '' }, opset: { type: 'string' }, lengths: { type: 'boolean' }, 'stack-only': { type: 'boolean' }, layers: { type: 'string' }, 'model-config': { type: 'string' } },
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

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
