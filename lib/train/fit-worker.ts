// SequenceModel.fit on a worker thread (native engine, Node): the model and optimizer
// arrive as a checkpoint, progress goes back as messages, and the trained checkpoint is
// the last message. An 'abort' message stops training between steps.
import { parentPort, workerData } from 'node:worker_threads';
import { LstmError } from '../errors.js';
import { type FitData, type FitOptions, SequenceModel, type SequenceModelOptions } from './model.js';
import { Adagrad, Adam, AdamW, type Optimizer, RMSprop, SGD } from './optim.js';
import { schedulerFromConfig, type LRScheduler, type SchedulerState } from './schedule.js';

export interface FitWorkerData {
  options: SequenceModelOptions;
  checkpoint: Uint8Array;
  optimizer: Record<string, unknown>;
  /** The schedule's kind and options, and where it stands. */
  scheduler?: { config: LRScheduler['config']; state: SchedulerState };
  data: FitData;
  fit: Omit<FitOptions, 'optimizer' | 'scheduler' | 'onProgress' | 'signal'>;
}

function makeOptimizer(model: SequenceModel, config: Record<string, unknown>): Optimizer {
  const { name, ...rest } = config;
  const params = model.parameters();
  if (name === 'sgd') return new SGD(params, rest as never);
  if (name === 'adam') return new Adam(params, rest as never);
  if (name === 'adamw') return new AdamW(params, rest as never);
  if (name === 'rmsprop') return new RMSprop(params, rest as never);
  if (name === 'adagrad') return new Adagrad(params, rest as never);
  throw new LstmError('LSTM_OPTION', `fit: optimizer ${String(name)} cannot move to a worker`);
}

async function main(port: NonNullable<typeof parentPort>): Promise<void> {
  const job = workerData as FitWorkerData;
  const model = new SequenceModel(job.options);
  const optimizer = makeOptimizer(model, job.optimizer);
  model.loadCheckpoint(job.checkpoint, optimizer);
  let scheduler: LRScheduler | undefined;
  if (job.scheduler) {
    scheduler = schedulerFromConfig(optimizer, job.scheduler.config, job.scheduler.state);
  }
  const abort = new AbortController();
  port.on('message', (m) => {
    if (m === 'abort') abort.abort();
  });
  try {
    const result = await model.fit(job.data, {
      ...job.fit,
      optimizer,
      scheduler,
      worker: false,
      signal: abort.signal,
      onProgress: (p) => port.postMessage({ type: 'progress', progress: p }),
    });
    port.postMessage({ type: 'done', result, checkpoint: model.saveCheckpoint(optimizer), scheduler: scheduler?.state() });
  } catch (err) {
    const e = err as { code?: string; message?: string };
    port.postMessage({ type: 'error', code: e.code, message: e.message ?? String(err) });
  } finally {
    port.close();
  }
}

if (parentPort) void main(parentPort);
