import type { LSTMConfig } from './config.js';
import { Rng, randomSeed } from './rng.js';

/** Which tensor of one direction of one layer a parameter is. */
export type ParamRole = 'wIh' | 'wHh' | 'bIh' | 'bHh' | 'wHr' | 'wCi' | 'wCf' | 'wCo' | 'wCh';

export interface ParamSpec {
  name: string;
  shape: number[];
  layer: number;
  dir: number;
  role: ParamRole;
}

/** The tensors of one direction of one layer, as both engines take them. */
export type DirectionParams = Partial<Record<ParamRole, Float32Array>> & { wIh: Float32Array; wHh: Float32Array };

const BASE: Record<ParamRole, string> = {
  wIh: 'weight_ih',
  wHh: 'weight_hh',
  bIh: 'bias_ih',
  bHh: 'bias_hh',
  wHr: 'weight_hr',
  wCi: 'weight_ci',
  wCf: 'weight_cf',
  wCo: 'weight_co',
  wCh: 'weight_ch',
};

export function layerInputSize(cfg: LSTMConfig, layer: number): number {
  return layer === 0 ? cfg.inputSize : cfg.numDirections * cfg.outSize;
}

/** Parameter names and shapes in PyTorch's state-dict order, peepholes after each direction's own. */
export function paramSpecs(cfg: LSTMConfig): ParamSpec[] {
  const H = cfg.hiddenSize;
  const specs: ParamSpec[] = [];
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    for (let dir = 0; dir < cfg.numDirections; dir++) {
      const suffix = `_l${layer}${dir === 1 ? '_reverse' : ''}`;
      const add = (role: ParamRole, shape: number[]): void => {
        specs.push({ name: BASE[role] + suffix, shape, layer, dir, role });
      };
      add('wIh', [4 * H, layerInputSize(cfg, layer)]);
      add('wHh', [4 * H, cfg.outSize]);
      if (cfg.bias) {
        add('bIh', [4 * H]);
        add('bHh', [4 * H]);
      }
      if (cfg.projSize > 0) add('wHr', [cfg.projSize, H]);
      if (cfg.peephole === 'diagonal') {
        add('wCi', [H]);
        add('wCf', [H]);
        add('wCo', [H]);
      } else if (cfg.peephole === 'full') {
        add('wCh', [4 * H, H]);
      }
    }
  }
  return specs;
}

/** PyTorch's initialisation: every parameter ~ U(-1/sqrt(H), 1/sqrt(H)). */
export function initParams(cfg: LSTMConfig, specs: ParamSpec[]): Map<string, Float32Array> {
  const rng = new Rng(cfg.seed ?? randomSeed());
  const k = 1 / Math.sqrt(cfg.hiddenSize);
  const params = new Map<string, Float32Array>();
  for (const s of specs) {
    const data = new Float32Array(s.shape.reduce((a, b) => a * b, 1));
    rng.fillUniform(data, -k, k);
    params.set(s.name, data);
  }
  return params;
}

/** Group flat parameters by layer and direction for the engines. */
export function groupParams(cfg: LSTMConfig, specs: ParamSpec[], params: Map<string, Float32Array>): DirectionParams[][] {
  const layers: DirectionParams[][] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    const dirs: Partial<Record<ParamRole, Float32Array>>[] = [];
    for (let d = 0; d < cfg.numDirections; d++) dirs.push({});
    layers.push(dirs as DirectionParams[]);
  }
  for (const s of specs) layers[s.layer][s.dir][s.role] = params.get(s.name)!;
  return layers;
}
