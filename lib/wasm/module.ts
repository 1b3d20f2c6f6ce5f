// The WebAssembly engine's modules: wasm/lstm-relaxed.wasm where the host has relaxed SIMD
// (its multiply-adds fused), else wasm/lstm.wasm (SIMD128); LSTM_WASM_SIMD picks one.
// Each is compiled once and instantiated on demand. One instance (one linear memory) per
// module serves every live model in this realm built on it; when the last object that
// lives in it is disposed or collected, the instance is dropped, so its whole memory goes
// back to the host (linear memory can grow but never shrink).
import { LstmError } from '../errors.js';
import { env, wasmBytesFrom, wasmBytesSync } from '../platform.js';

// The slice of the WebAssembly JS API used here (TypeScript declares it only with the
// DOM library, which a Node package should not pull into its users' types).
interface WasmModule {
  readonly __brand?: 'WebAssembly.Module';
}
interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
declare const WebAssembly: {
  Module: { new (bytes: Uint8Array): WasmModule; imports(m: WasmModule): { module: string; name: string }[] };
  Instance: new (m: WasmModule, imports: object) => { exports: unknown };
  RuntimeError: new () => Error;
  compile(bytes: Uint8Array): Promise<WasmModule>;
  validate(bytes: Uint8Array): boolean;
};

/** The two builds of the kernels: SIMD128 alone, or with relaxed SIMD's fused multiply-add. */
export type WasmSimd = 'relaxed' | 'simd128';

/** The file each build ships in, under wasm/. */
export const WASM_FILES: Record<WasmSimd, string> = { relaxed: 'lstm-relaxed.wasm', simd128: 'lstm.wasm' };

// A module of one function using f32x4.relaxed_madd: valid only where relaxed SIMD is
// (Node 22+, current browsers; Node 20 with --experimental-wasm-relaxed-simd).
const RELAXED_PROBE = new Uint8Array([
  0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 1, 8, 1, 0x60, 3, 0x7b, 0x7b, 0x7b, 1, 0x7b, 3, 2, 1, 0, 0x0a, 0x0d, 1, 0x0b, 0,
  0x20, 0, 0x20, 1, 0x20, 2, 0xfd, 0x85, 0x02, 0x0b,
]);

let relaxedHost: boolean | undefined;
function hostHasRelaxedSimd(): boolean {
  if (relaxedHost === undefined) {
    try {
      relaxedHost = typeof WebAssembly === 'object' && WebAssembly.validate(RELAXED_PROBE);
    } catch {
      relaxedHost = false;
    }
  }
  return relaxedHost;
}

/** LSTM_WASM_SIMD: 'relaxed' | 'simd128', or null for 'auto' (also when unset); LSTM_OPTION when invalid. */
export function requestedSimd(): WasmSimd | null {
  const v = env('LSTM_WASM_SIMD');
  if (v === 'relaxed' || v === 'simd128') return v;
  if (v !== undefined && v !== '' && v !== 'auto') {
    throw new LstmError('LSTM_OPTION', `LSTM_WASM_SIMD: expected 'relaxed', 'simd128' or 'auto', got ${JSON.stringify(v)}`);
  }
  return null;
}

/** The build initWasm() fetches: the requested one, else relaxed where the host validates it. */
function preferredSimd(): WasmSimd {
  return requestedSimd() ?? (hostHasRelaxedSimd() ? 'relaxed' : 'simd128');
}

/**
 * The build new wasm models use (read when a model is built, like LSTM_ISA): the one
 * LSTM_WASM_SIMD requests; for 'auto', relaxed where the host has relaxed SIMD and its
 * module compiles, else SIMD128.
 */
export function wasmSimd(): WasmSimd {
  const requested = requestedSimd();
  if (requested) return requested;
  return hostHasRelaxedSimd() && compiledModule('relaxed') ? 'relaxed' : 'simd128';
}

/** Bumped with native/wasm/api.cc's kWasmAbi. */
export const WASM_ABI_VERSION = 3;

export interface WasmExports {
  memory: WasmMemory;
  lstm_abi(): number;
  lstm_isa(requested: number): number;
  lstm_malloc(bytes: number): number;
  lstm_free(ptr: number): void;
  lstm_layer_new(ints: number, floats: number, ptrs: number): number;
  lstm_layer_free(layer: number): void;
  lstm_layer_bytes(layer: number): number;
  lstm_forward(layers: number, n: number, isa: number, x: number, T: number, B: number, h0: number, c0: number, lengths: number, y: number, hn: number, cn: number): void;
  lstm_step(layers: number, n: number, isa: number, x: number, B: number, h: number, c: number, out: number): void;
  lstm_trim(): void;
  lstm_packed_new(): number;
  lstm_packed_set(p: number, w: number, n: number, k: number): void;
  lstm_packed_set_kn(p: number, wt: number, n: number, k: number): void;
  lstm_packed_free(p: number): void;
  lstm_gemm_nt(isa: number, M: number, a: number, p: number, c: number, accumulate: number): void;
  lstm_gemm_tn(isa: number, M: number, at: number, p: number, c: number, accumulate: number): void;
  __wasm_call_ctors?: () => void;
}

const compiled: Record<WasmSimd, WasmModule | null> = { relaxed: null, simd128: null };
const failure: Record<WasmSimd, string | null> = { relaxed: null, simd128: null };

function check(mod: WasmModule): WasmModule {
  const imports = WebAssembly.Module.imports(mod);
  if (imports.length > 0) throw new Error(`the module imports ${imports.map((i) => `${i.module}.${i.name}`).join(', ')}; it must import nothing`);
  return mod;
}

function unavailable(simd: WasmSimd, err: unknown): string {
  const hint =
    simd === 'relaxed' && !hostHasRelaxedSimd()
      ? ` (LSTM_WASM_SIMD=relaxed, but this host has no relaxed SIMD: Node 20 needs --experimental-wasm-relaxed-simd)`
      : '';
  return `the WebAssembly engine could not be loaded: ${(err as Error).message}${hint}`;
}

/**
 * Compile the module now, from the package's wasm/ directory (the build this host runs
 * best, see LSTM_WASM_SIMD) or from `source` (a URL, a path, or the bytes; it then serves
 * that build). Browsers must call this (and await it) before creating a model on the wasm
 * engine: they do not compile modules over 4 KB synchronously. Node does it on first use
 * by itself.
 */
export async function initWasm(source?: string | URL | ArrayBuffer | Uint8Array): Promise<void> {
  const first = preferredSimd();
  // 'auto' with the package's files: a relaxed build that cannot be had (a bundler that
  // copied only lstm.wasm, a host that validates the probe but not the module) falls back
  // to SIMD128, which wasmSimd() then picks.
  const order: WasmSimd[] = first === 'relaxed' && source === undefined && requestedSimd() === null ? ['relaxed', 'simd128'] : [first];
  const errors: unknown[] = [];
  for (const simd of order) {
    if (compiled[simd]) return;
    try {
      compiled[simd] = check(await WebAssembly.compile(await wasmBytesFrom(source, WASM_FILES[simd])));
      failure[simd] = null;
      return;
    } catch (err) {
      failure[simd] = unavailable(simd, err);
      errors.push(err);
    }
  }
  const also = errors.length > 1 ? ` (and the relaxed-SIMD build: ${(errors[0] as Error).message})` : '';
  throw new LstmError('LSTM_WASM', `${failure[order[order.length - 1]]}${also}`, { cause: errors[errors.length - 1] });
}

/** The compiled module, or null with the reason in wasmUnavailable(). Never throws. */
function compiledModule(simd: WasmSimd): WasmModule | null {
  if (compiled[simd] || failure[simd]) return compiled[simd];
  try {
    if (typeof WebAssembly !== 'object') throw new Error('this JavaScript host has no WebAssembly');
    compiled[simd] = check(new WebAssembly.Module(wasmBytesSync(WASM_FILES[simd])));
  } catch (err) {
    failure[simd] = unavailable(simd, err);
  }
  return compiled[simd];
}

/** Why the wasm engine cannot run here (with the build LSTM_WASM_SIMD picks), or null when it can. */
export function wasmUnavailable(): string | null {
  let simd: WasmSimd;
  try {
    simd = wasmSimd();
  } catch (err) {
    return (err as Error).message;
  }
  return compiledModule(simd) ? null : (failure[simd] ?? 'the WebAssembly engine is not loaded');
}

/** One instance and its bookkeeping. */
export class WasmRuntime {
  readonly x: WasmExports;
  /** Objects (layers, packed matrices) that live in this instance's memory. */
  private live = 0;

  constructor(
    mod: WasmModule,
    readonly simd: WasmSimd,
  ) {
    const instance = new WebAssembly.Instance(mod, {});
    this.x = instance.exports as unknown as WasmExports;
    if (this.x.lstm_abi() !== WASM_ABI_VERSION) {
      throw new LstmError('LSTM_WASM', `wasm/${WASM_FILES[simd]} has ABI ${this.x.lstm_abi()}, this JS expects ${WASM_ABI_VERSION}: reinstall lstm-native`);
    }
    this.x.__wasm_call_ctors?.();
  }

  get memoryBytes(): number {
    return this.x.memory.buffer.byteLength;
  }

  /** Run a call into the module; a trap (out of memory) becomes an LstmError. */
  call<T>(what: string, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if (err instanceof WebAssembly.RuntimeError || err instanceof RangeError) {
        throw new LstmError('LSTM_WASM', `${what}: the WebAssembly engine ran out of memory (${err.message})`, { cause: err });
      }
      throw err;
    }
  }

  /** malloc, or an LstmError when the 4 GiB linear memory cannot hold `bytes` more. */
  alloc(bytes: number, what: string): number {
    const p = bytes > 0xfff0_0000 ? 0 : this.call(what, () => this.x.lstm_malloc(Math.max(bytes, 4)));
    if (p === 0) throw new LstmError('LSTM_WASM', `${what}: the WebAssembly engine could not allocate ${bytes} bytes`);
    return p;
  }

  free(ptr: number): void {
    if (ptr) this.x.lstm_free(ptr);
  }

  /** A view of linear memory; invalid after anything that may grow it (any allocation). */
  f32(ptr: number, n: number): Float32Array {
    return new Float32Array(this.x.memory.buffer, ptr, n);
  }

  i32(ptr: number, n: number): Int32Array {
    return new Int32Array(this.x.memory.buffer, ptr, n);
  }

  u32(ptr: number, n: number): Uint32Array {
    return new Uint32Array(this.x.memory.buffer, ptr, n);
  }

  retain(): void {
    this.live++;
  }

  release(): void {
    if (--this.live > 0) return;
    this.live = 0;
    this.x.lstm_trim();
    if (current[this.simd] === this) current[this.simd] = null;
  }
}

const current: Record<WasmSimd, WasmRuntime | null> = { relaxed: null, simd128: null };

/** The instance new objects of the build LSTM_WASM_SIMD picks go into (created when none is live). */
export function wasmRuntime(): WasmRuntime {
  const simd = wasmSimd();
  const live = current[simd];
  if (live) return live;
  const mod = compiledModule(simd);
  if (!mod) throw new LstmError('LSTM_WASM', failure[simd]!);
  try {
    current[simd] = new WasmRuntime(mod, simd);
  } catch (err) {
    if (err instanceof LstmError) throw err;
    throw new LstmError('LSTM_WASM', `the WebAssembly engine could not start: ${(err as Error).message}`, { cause: err });
  }
  return current[simd]!;
}

/** Bytes of linear memory held by the live instances (0 when every wasm model is gone). */
export function wasmMemoryBytes(): number {
  return (current.relaxed?.memoryBytes ?? 0) + (current.simd128?.memoryBytes ?? 0);
}
