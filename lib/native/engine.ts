import type { Engine, EngineLayer, LayerDesc, StackResult, StackRun } from '../engine.js';
import { asLstmError } from '../errors.js';
import { env } from '../platform.js';
import type { DirectionParams } from '../params.js';
import { ScratchBuffers, type CellKernels, type CellSpec, type DirTape, type StepCell } from '../train/bptt.js';
import type { NativeAddon, NativeLayerHandle, NativeStepper } from './loader.js';

class NativeLayer implements EngineLayer {
  readonly handle: NativeLayerHandle;

  constructor(addon: NativeAddon, isa: string, desc: LayerDesc, dirs: DirectionParams[]) {
    try {
      this.handle = new addon.Layer({ ...desc, isa }, dirs);
    } catch (err) {
      throw asLstmError(err);
    }
  }

  update(dirs: DirectionParams[]): void {
    try {
      this.handle.load(dirs);
    } catch (err) {
      throw asLstmError(err);
    }
  }

  dispose(): void {
    this.handle.dispose();
  }
}

const handles = (layers: EngineLayer[]): NativeLayerHandle[] => layers.map((l) => (l as NativeLayer).handle);

/**
 * The native engine of one model. LSTM_ISA is read once, when the model is built (not
 * by the addon: worker threads have their own process.env), so reloading weights
 * never changes the kernels a model runs on.
 */
export function nativeEngine(addon: NativeAddon): Engine {
  const isa = env('LSTM_ISA') ?? '';
  // Packed matrices released by training are repacked in place by the next prepare():
  // a training step then creates no native objects once warm.
  type PackedHandle = object & { set(w: Float32Array, n: number, k: number, transposed?: boolean): void; n: number; k: number };
  const pool: PackedHandle[] = [];
  type CellHandle = StepCell & { reset(spec: CellSpec, rows: number, tape: DirTape): void };
  const cellPool: CellHandle[] = [];
  const scratch = new ScratchBuffers();
  // The model's layers bound once for step(): rebuilt when the model's layers change (a
  // new array; the addon itself notices layers reloaded or disposed).
  let stepper: { layers: EngineLayer[]; native: NativeStepper } | null = null;
  const cells: CellKernels = {
    acquire(spec, rows, tape) {
      try {
        const reused = cellPool.pop();
        if (reused) {
          reused.reset({ ...spec, isa } as CellSpec, rows, tape);
          return reused;
        }
        return new addon.TrainCell({ ...spec, isa }, rows, tape) as CellHandle;
      } catch (err) {
        throw asLstmError(err);
      }
    },
    release(cell) {
      if (cellPool.length < 16) cellPool.push(cell as CellHandle);
    },
  };
  return {
    name: 'native',
    createLayer: (desc, dirs) => new NativeLayer(addon, isa, desc, dirs),
    forward(layers, run: StackRun, out: StackResult) {
      try {
        addon.forward(handles(layers), run.x, run.T, run.B, run.h0, run.c0, run.lengths, out.y, out.hn, out.cn, run.threads);
      } catch (err) {
        throw asLstmError(err);
      }
    },
    async forwardAsync(layers, run: StackRun) {
      try {
        const [y, hn, cn] = await addon.forwardAsync(handles(layers), run.x, run.T, run.B, run.h0, run.c0, run.lengths, run.threads);
        return { y, hn, cn };
      } catch (err) {
        throw asLstmError(err);
      }
    },
    gemm(threads) {
      const pack = (w: Float32Array, n: number, k: number, transposed: boolean): PackedHandle => {
        try {
          const reused = pool.pop();
          if (reused) {
            reused.set(w, n, k, transposed);
            return Object.assign(reused, { n, k });
          }
          return Object.assign(new addon.Packed(w, n, k, transposed) as PackedHandle, { n, k });
        } catch (err) {
          throw asLstmError(err);
        }
      };
      return {
        prepare: (w, n, k) => pack(w, n, k, false),
        prepareT: (wt, n, k) => pack(wt, n, k, true),
        tn(M, at, w, c, accumulate) {
          try {
            addon.gemmTN(M, at, w, c, accumulate, isa, threads);
          } catch (err) {
            throw asLstmError(err);
          }
        },
        nt(M, a, w, c, accumulate) {
          try {
            addon.gemmNT(M, a, w, c, accumulate, isa, threads);
          } catch (err) {
            throw asLstmError(err);
          }
        },
        release(w) {
          if (pool.length < 64) pool.push(w as PackedHandle);
          else (w as unknown as { dispose(): void }).dispose();
        },
        cells,
        buffer: scratch.get,
        columnSums(src, rows, cols, dst) {
          try {
            addon.columnSums(src, rows, cols, dst);
          } catch (err) {
            throw asLstmError(err);
          }
        },
      };
    },
    step(layers, x, B, h, c, out, threads) {
      try {
        if (stepper === null || stepper.layers !== layers) stepper = { layers, native: new addon.Stepper(handles(layers)) };
        stepper.native.step(x, B, h, c, out, threads);
      } catch (err) {
        throw asLstmError(err);
      }
    },
    dispose() {
      scratch.clear();
      stepper = null;
    },
  };
}
