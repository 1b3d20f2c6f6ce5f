// The WebAssembly engine: the C++ kernels compiled to wasm32 + SIMD128 (wasm/lstm.wasm, or
// wasm/lstm-relaxed.wasm with relaxed SIMD's fused multiply-add where the host has it),
// driven through linear memory. Single-threaded; everything runs on the calling thread.
// Inputs are copied into the module's memory for each call and outputs copied back,
// which costs O(size of the data) against O(size x hidden) of arithmetic.
import { directionActs, type Engine, type EngineLayer, type LayerDesc, type StackResult, type StackRun } from '../engine.js';
import { LstmError } from '../errors.js';
import { jsCells } from '../js/train-cell.js';
import { env } from '../platform.js';
import { checkStepMemory } from '../tensor.js';
import type { DirectionParams, ParamRole } from '../params.js';
import { type Gemm, type PreparedMatrix, ScratchBuffers } from '../train/bptt.js';
import { type WasmExports, type WasmRuntime, wasmRuntime } from './module.js';

const ROLES: ParamRole[] = ['wIh', 'wHh', 'bIh', 'bHh', 'wHr', 'wCi', 'wCf', 'wCo', 'wCh'];

/** A batch of allocations made together and freed together. */
class Arena {
  private readonly ptrs: number[] = [];
  constructor(private readonly rt: WasmRuntime, private readonly what: string) {}
  alloc(bytes: number): number {
    const p = this.rt.alloc(bytes, this.what);
    this.ptrs.push(p);
    return p;
  }
  /** Allocate every size first (memory may grow), then fill: views are taken after the last allocation. */
  floats(arrays: (Float32Array | null)[]): number[] {
    const ptrs = arrays.map((a) => (a ? this.alloc(a.length * 4) : 0));
    arrays.forEach((a, i) => {
      if (a) this.rt.f32(ptrs[i], a.length).set(a);
    });
    return ptrs;
  }
  free(): void {
    for (const p of this.ptrs) this.rt.free(p);
    this.ptrs.length = 0;
  }
}

// Objects collected without dispose() free their memory in the module.
const reclaim = new FinalizationRegistry<{ rt: WasmRuntime; free: (rt: WasmRuntime) => void }>(({ rt, free }) => {
  free(rt);
  rt.release();
});

/** An object that lives in the module's memory: freed by dispose(), or by the GC when dropped. */
abstract class WasmObject {
  ptr = 0;
  private readonly token = {};

  constructor(readonly rt: WasmRuntime, private readonly freeFn: (x: WasmExports, ptr: number) => void) {}

  /** Hold `ptr` from now on, freeing the one held before (the first one retains the instance). */
  protected own(ptr: number): void {
    if (this.ptr) {
      reclaim.unregister(this.token);
      this.freeFn(this.rt.x, this.ptr);
    } else {
      this.rt.retain();
    }
    this.ptr = ptr;
    const free = this.freeFn; // the registry's held value must not reach `this`
    reclaim.register(this, { rt: this.rt, free: (r) => free(r.x, ptr) }, this.token);
  }

  dispose(): void {
    if (!this.ptr) return;
    reclaim.unregister(this.token);
    this.freeFn(this.rt.x, this.ptr);
    this.ptr = 0;
    this.rt.release();
  }
}

class WasmLayer extends WasmObject implements EngineLayer {
  constructor(rt: WasmRuntime, readonly desc: LayerDesc, dirs: DirectionParams[]) {
    super(rt, (x, ptr) => x.lstm_layer_free(ptr));
    this.own(this.pack(dirs));
  }

  private pack(dirs: DirectionParams[]): number {
    const d = this.desc;
    const rt = this.rt;
    const arena = new Arena(rt, 'wasm layer');
    try {
      const ints = arena.alloc(15 * 4);
      const floats = arena.alloc(13 * 4);
      const ptrs = arena.alloc(9 * 4 * dirs.length);
      const weights = dirs.map((dir) => arena.floats(ROLES.map((r) => dir[r] ?? null)));
      const r = directionActs(d, 1);
      rt.i32(ints, 15).set([
        d.inputSize, d.hiddenSize, d.projSize, d.numDirections, d.reverse ? 1 : 0, d.bias ? 1 : 0, d.peephole,
        d.coupled ? 1 : 0, d.gate.kind, d.cell.kind, d.hidden.kind, d.reverseActs ? 1 : 0, r.gate.kind, r.cell.kind, r.hidden.kind,
      ]);
      rt.f32(floats, 13).set([
        d.clip, d.gate.alpha, d.gate.beta, d.cell.alpha, d.cell.beta, d.hidden.alpha, d.hidden.beta,
        r.gate.alpha, r.gate.beta, r.cell.alpha, r.cell.beta, r.hidden.alpha, r.hidden.beta,
      ]);
      rt.u32(ptrs, 9 * dirs.length).set(weights.flat());
      return rt.call('wasm layer', () => rt.x.lstm_layer_new(ints, floats, ptrs));
    } finally {
      arena.free();
    }
  }

  update(dirs: DirectionParams[]): void {
    if (!this.ptr) throw new LstmError('LSTM_DISPOSED', 'this layer was disposed');
    this.own(this.pack(dirs));
  }
}

class WasmPacked extends WasmObject implements PreparedMatrix {
  constructor(rt: WasmRuntime, public n: number, public k: number) {
    super(rt, (x, ptr) => x.lstm_packed_free(ptr));
    this.own(rt.call('wasm gemm', () => rt.x.lstm_packed_new()));
  }

  /** W [n, k], or with transposed its transpose [k, n]. */
  set(w: Float32Array, n: number, k: number, transposed = false): void {
    const arena = new Arena(this.rt, 'wasm gemm');
    try {
      const [wp] = arena.floats([w]);
      const x = this.rt.x;
      this.rt.call('wasm gemm', () => (transposed ? x.lstm_packed_set_kn(this.ptr, wp, n, k) : x.lstm_packed_set(this.ptr, wp, n, k)));
      this.n = n;
      this.k = k;
    } finally {
      arena.free();
    }
  }
}

function live(layers: EngineLayer[]): WasmLayer[] {
  return layers.map((l, i) => {
    const w = l as WasmLayer;
    if (!w.ptr) throw new LstmError('LSTM_DISPOSED', `layers[${i}] was disposed`);
    return w;
  });
}

/** Layer pointers and the inputs of a run, in module memory. */
function stackArgs(arena: Arena, rt: WasmRuntime, layers: WasmLayer[]): number {
  const p = arena.alloc(4 * layers.length);
  rt.u32(p, layers.length).set(layers.map((l) => l.ptr));
  return p;
}

function outWidth(layers: WasmLayer[]): number {
  const d = layers[layers.length - 1].desc;
  return d.numDirections * (d.projSize || d.hiddenSize);
}

function runForward(isa: number, layers: EngineLayer[], run: StackRun, out: StackResult): void {
  const ls = live(layers);
  const rt = ls[0].rt;
  const arena = new Arena(rt, 'wasm forward');
  try {
    const lp = stackArgs(arena, rt, ls);
    const [x, h0, c0] = arena.floats([run.x, run.h0, run.c0]);
    const lengths = run.lengths ? arena.alloc(4 * run.B) : 0;
    const y = arena.alloc(4 * out.y.length);
    const hn = arena.alloc(4 * out.hn.length);
    const cn = arena.alloc(4 * out.cn.length);
    if (run.lengths) rt.i32(lengths, run.B).set(run.lengths);
    rt.call('forward', () => rt.x.lstm_forward(lp, ls.length, isa, x, run.T, run.B, h0, c0, lengths, y, hn, cn));
    out.y.set(rt.f32(y, out.y.length));
    out.hn.set(rt.f32(hn, out.hn.length));
    out.cn.set(rt.f32(cn, out.cn.length));
  } finally {
    arena.free();
  }
}

/** An engine on the shared wasm instance (throws LSTM_WASM when the module cannot load). */
export function wasmEngine(): Engine {
  // Dropped by dispose(): a disposed model the caller still holds must not keep the
  // instance (and its memory) alive.
  let current: WasmRuntime | null = wasmRuntime();
  const runtime = (): WasmRuntime => {
    if (!current) throw new LstmError('LSTM_DISPOSED', 'this model was disposed');
    return current;
  };
  // LSTM_ISA=scalar runs the portable kernels (read once, when the model is built).
  const isa = current.x.lstm_isa(env('LSTM_ISA') === 'scalar' ? 0 : 3);
  const pool: WasmPacked[] = [];
  const scratch = new ScratchBuffers();
  // c [M, n] (+)= a [M, k] · W^T, or with transposed a given as at [k, M].
  const multiply = (transposed: boolean, M: number, a: Float32Array, p: WasmPacked, c: Float32Array, accumulate: boolean): void => {
    if (!p.ptr) throw new LstmError('LSTM_DISPOSED', 'gemm: this packed matrix was released');
    const rt = p.rt;
    const arena = new Arena(rt, 'wasm gemm');
    try {
      const ap = arena.alloc(4 * M * p.k);
      const cp = arena.alloc(4 * M * p.n);
      rt.f32(ap, M * p.k).set(a.subarray(0, M * p.k));
      if (accumulate) rt.f32(cp, M * p.n).set(c.subarray(0, M * p.n));
      const fn = transposed ? rt.x.lstm_gemm_tn : rt.x.lstm_gemm_nt;
      rt.call('gemm', () => fn(isa, M, ap, p.ptr, cp, accumulate ? 1 : 0));
      c.set(rt.f32(cp, M * p.n));
    } finally {
      arena.free();
    }
  };
  // W [n, k], or with transposed its transpose [k, n], in a pooled packed matrix.
  const pack = (w: Float32Array, n: number, k: number, transposed: boolean): WasmPacked => {
    const p = pool.pop() ?? new WasmPacked(runtime(), n, k);
    p.set(w, n, k, transposed);
    return p;
  };
  const gemm: Gemm = {
    buffer: scratch.get,
    prepare: (w, n, k) => pack(w, n, k, false),
    prepareT: (wt, n, k) => pack(wt, n, k, true),
    nt: (M, a, w, c, accumulate) => multiply(false, M, a, w as WasmPacked, c, accumulate),
    tn: (M, at, w, c, accumulate) => multiply(true, M, at, w as WasmPacked, c, accumulate),
    release(w) {
      const p = w as WasmPacked;
      if (pool.length < 64) pool.push(p);
      else p.dispose();
    },
    // The element-wise step kernels stay in TypeScript: moving each step's tape in and
    // out of linear memory would cost as much as computing it.
    cells: jsCells,
  };
  return {
    name: 'wasm',
    createLayer: (desc, dirs) => new WasmLayer(runtime(), desc, dirs),
    forward: (layers, run, out) => runForward(isa, layers, run, out),
    forwardAsync(layers, run) {
      // Single-threaded: computed now, on the calling thread (so dispose() right after
      // the call cannot pull the weights from under it), delivered as a promise.
      try {
        const ls = live(layers);
        const out: StackResult = {
          y: new Float32Array(run.T * run.B * outWidth(ls)),
          hn: new Float32Array(run.h0.length),
          cn: new Float32Array(run.c0.length),
        };
        runForward(isa, ls, run, out);
        return Promise.resolve(out);
      } catch (err) {
        return Promise.reject(err);
      }
    },
    step(layers, x, B, h, c, out) {
      checkStepMemory(x, h, c, out);
      const ls = live(layers);
      const rt = ls[0].rt;
      const arena = new Arena(rt, 'wasm step');
      try {
        const lp = stackArgs(arena, rt, ls);
        const [xp, hp, cp] = arena.floats([x, h, c]);
        const op = arena.alloc(4 * out.length);
        rt.call('step', () => rt.x.lstm_step(lp, ls.length, isa, xp, B, hp, cp, op));
        h.set(rt.f32(hp, h.length));
        c.set(rt.f32(cp, c.length));
        out.set(rt.f32(op, out.length));
      } finally {
        arena.free();
      }
    },
    gemm: () => gemm,
    dispose() {
      for (const p of pool.splice(0)) p.dispose();
      scratch.clear();
      current = null;
    },
  };
}
