import type { Engine, EngineLayer, LayerDesc, LayerRun } from '../engine.js';
import { asLstmError } from '../errors.js';
import type { DirectionParams } from '../params.js';
import type { NativeAddon, NativeLayerHandle } from './loader.js';

class NativeLayer implements EngineLayer {
  private readonly handle: NativeLayerHandle;

  constructor(addon: NativeAddon, isa: string, desc: LayerDesc, dirs: DirectionParams[]) {
    try {
      this.handle = new addon.Layer({ ...desc, isa }, dirs);
    } catch (err) {
      throw asLstmError(err);
    }
  }

  forward(run: LayerRun): void {
    try {
      this.handle.forward(run.x, run.T, run.B, run.h0, run.c0, run.lengths, run.y, run.hn, run.cn);
    } catch (err) {
      throw asLstmError(err);
    }
  }

  dispose(): void {
    this.handle.dispose();
  }
}

/**
 * The native engine of one model. LSTM_ISA is read once, when the model is built (not
 * by the addon: worker threads have their own process.env), so reloading weights
 * never changes the kernels a model runs on.
 */
export function nativeEngine(addon: NativeAddon): Engine {
  const isa = process.env.LSTM_ISA ?? '';
  return {
    name: 'native',
    createLayer: (desc, dirs) => new NativeLayer(addon, isa, desc, dirs),
  };
}
