import type { ActivationSet, ResolvedActivation } from './config.js';
import type { DirectionParams } from './params.js';
import type { Gemm } from './train/bptt.js';

/** Peephole kinds as integers: part of the native ABI. */
export const PEEPHOLE_KIND = { none: 0, diagonal: 1, full: 2 } as const;

/** One layer (one or two directions) as an engine builds it. */
export interface LayerDesc {
  inputSize: number;
  hiddenSize: number;
  /** 0 when there is no projection. */
  projSize: number;
  numDirections: 1 | 2;
  /** A one-direction layer that runs from the last step to the first. */
  reverse: boolean;
  bias: boolean;
  peephole: 0 | 1 | 2;
  gate: ResolvedActivation;
  cell: ResolvedActivation;
  hidden: ResolvedActivation;
  /** A bidirectional layer's reverse-direction activations when they differ from the above; else null. */
  reverseActs: ActivationSet | null;
  /** 0 means no clipping. */
  clip: number;
  coupled: boolean;
}

/** Direction d's activations. */
export function directionActs(desc: Pick<LayerDesc, 'gate' | 'cell' | 'hidden' | 'reverseActs'>, d: number): ActivationSet {
  return d === 1 && desc.reverseActs ? desc.reverseActs : desc;
}

/**
 * Arguments of one layer's forward, all time-major and validated by the facade:
 * x [T, B, inputSize], h0/hn [D, B, Hout], c0/cn [D, B, H], y [T, B, D*Hout],
 * lengths [B] with values in 1..T or null for full-length sequences.
 */
export interface LayerRun {
  x: Float32Array;
  T: number;
  B: number;
  h0: Float32Array;
  c0: Float32Array;
  lengths: Int32Array | null;
  y: Float32Array;
  hn: Float32Array;
  cn: Float32Array;
}

export interface EngineLayer {
  /** New weights for the same configuration (after an optimizer step); calls in flight keep the old ones. */
  update(dirs: DirectionParams[]): void;
  dispose(): void;
}

/**
 * A whole stack's forward, time-major: layer l+1 reads layer l's output. h0/hn hold
 * every layer ([L*D, B, Hout]), c0/cn too ([L*D, B, H]); y is the last layer's output.
 */
export interface StackRun {
  x: Float32Array;
  T: number;
  B: number;
  h0: Float32Array;
  c0: Float32Array;
  lengths: Int32Array | null;
  threads: number;
}

export interface StackResult {
  y: Float32Array;
  hn: Float32Array;
  cn: Float32Array;
}

export interface Engine {
  readonly name: 'native' | 'wasm' | 'js';
  createLayer(desc: LayerDesc, dirs: DirectionParams[]): EngineLayer;
  /** Synchronous forward into caller-allocated outputs. */
  forward(layers: EngineLayer[], run: StackRun, out: StackResult): void;
  /** Off the calling thread where the engine can; inputs may be reused once this returns. */
  forwardAsync(layers: EngineLayer[], run: StackRun): Promise<StackResult>;
  /**
   * One time step of a unidirectional stack: h [L, B, Hout], c [L, B, H] updated in place.
   * Throws LSTM_SHAPE if out overlaps x, h or c, or h overlaps c (checkStepMemory).
   */
  step(layers: EngineLayer[], x: Float32Array, B: number, h: Float32Array, c: Float32Array, out: Float32Array, threads: number): void;
  /** The matrix products of training (BPTT), with this many threads where the engine has them. */
  gemm(threads: number): Gemm;
  /** The model that used this engine is gone: release what the engine holds for it. */
  dispose?(): void;
}
