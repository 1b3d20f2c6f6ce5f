// The WebAssembly engine's module: compiled once, instantiated on demand. One instance
// (one linear memory) serves every live model in this realm; when the last object that
// lives in it is disposed or collected, the instance is dropped, so its whole memory
// goes back to the host (linear memory can grow but never shrink).
import { LstmError } from '../errors.js';
import { wasmBytesFrom, wasmBytesSync } from '../platform.js';

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
};

/** Bumped with native/wasm/api.cc's kWasmAbi. */
export const WASM_ABI_VERSION = 2;

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

let compiled: WasmModule | null = null;
let failure: string | null = null;

function check(mod: WasmModule): WasmModule {
  const imports = WebAssembly.Module.imports(mod);
  if (imports.length > 0) throw new Error(`the module imports ${imports.map((i) => `${i.module}.${i.name}`).join(', ')}; it must import nothing`);
  return mod;
}

/**
 * Compile the module now, from the package's wasm/lstm.wasm or from `source` (a URL,
 * a path, or the bytes). Browsers must call this (and await it) before creating a model
 * on the wasm engine: they do not compile modules over 4 KB synchronously. Node does it
 * on first use by itself.
 */
export async function initWasm(source?: string | URL | ArrayBuffer | Uint8Array): Promise<void> {
  if (compiled) return;
  try {
    compiled = check(await WebAssembly.compile(await wasmBytesFrom(source)));
    failure = null;
  } catch (err) {
    failure = `the WebAssembly engine could not be loaded: ${(err as Error).message}`;
    throw new LstmError('LSTM_WASM', failure, { cause: err });
  }
}

/** The compiled module, or null with the reason in wasmUnavailable(). Never throws. */
function compiledModule(): WasmModule | null {
  if (compiled || failure) return compiled;
  try {
    if (typeof WebAssembly !== 'object') throw new Error('this JavaScript host has no WebAssembly');
    compiled = check(new WebAssembly.Module(wasmBytesSync()));
  } catch (err) {
    failure = `the WebAssembly engine could not be loaded: ${(err as Error).message}`;
  }
  return compiled;
}

/** Why the wasm engine cannot run here, or null when it can. */
export function wasmUnavailable(): string | null {
  return compiledModule() ? null : (failure ?? 'the WebAssembly engine is not loaded');
}

/** One instance and its bookkeeping. */
export class WasmRuntime {
  readonly x: WasmExports;
  /** Objects (layers, packed matrices) that live in this instance's memory. */
  private live = 0;

  constructor(mod: WasmModule) {
    const instance = new WebAssembly.Instance(mod, {});
    this.x = instance.exports as unknown as WasmExports;
    if (this.x.lstm_abi() !== WASM_ABI_VERSION) {
      throw new LstmError('LSTM_WASM', `wasm/lstm.wasm has ABI ${this.x.lstm_abi()}, this JS expects ${WASM_ABI_VERSION}: reinstall lstm-native`);
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
    if (current === this) current = null;
  }
}

let current: WasmRuntime | null = null;

/** The instance new objects go into (created when none is live). */
export function wasmRuntime(): WasmRuntime {
  if (current) return current;
  const mod = compiledModule();
  if (!mod) throw new LstmError('LSTM_WASM', wasmUnavailable()!);
  try {
    current = new WasmRuntime(mod);
  } catch (err) {
    if (err instanceof LstmError) throw err;
    throw new LstmError('LSTM_WASM', `the WebAssembly engine could not start: ${(err as Error).message}`, { cause: err });
  }
  return current;
}

/** Bytes of linear memory held by the live instance (0 when every wasm model is gone). */
export function wasmMemoryBytes(): number {
  return current ? current.memoryBytes : 0;
}
