// ONNX import and export. Import follows the graph from its data input through the LSTM
// nodes (the shape torch.onnx.export writes: Transpose / Slice / Squeeze / Reshape /
// Concat around LSTM nodes, or a single LSTM node; zero initial states; a sort of the batch
// by lengths and its inverse) and checks that the graph's outputs are the stack's; export
// writes the same shape back.
// Protobuf is decoded and encoded by protobufjs with the ONNX schema (onnx-proto).
import type { onnx as OnnxNs } from 'onnx-proto';
import { configActivations, type BackendChoice, type LSTMConfig } from '../config.js';
import { LstmError, describe, optionsArg } from '../errors.js';
import { LSTM } from '../lstm.js';
import { activationsFromOnnx, activationsToOnnx, onnxToStateDict, stateDictToOnnx } from '../onnx-layout.js';
import { MAX_ELEMENTS, gatherStrided, transpose2d, type Tensor } from '../tensor.js';
import { halfToFloat } from './safetensors.js';
import { loadOnnxProto } from '../platform.js';

type Onnx = typeof OnnxNs;
type NodeProto = OnnxNs.INodeProto;
type TensorProto = OnnxNs.ITensorProto;

let onnxModule: Onnx | undefined;
/** The schema is loaded on first use, so importing lstm-native does not pay for it. */
function onnxProto(): Onnx {
  onnxModule ??= loadOnnxProto() as Onnx;
  return onnxModule;
}

function formatError(msg: string): LstmError {
  return new LstmError('LSTM_FORMAT', `ONNX: ${msg}`);
}

const nodeLabel = (n: NodeProto): string => `node '${n.name || '(unnamed)'}' (${n.opType})`;

// TensorProto.DataType values this reader understands.
const FLOAT = 1;
const INT32 = 6;
const INT64 = 7;
const FLOAT16 = 10;
// LSTM-22 takes bfloat16 weights too
const BFLOAT16 = 16;
const DOUBLE = 11;
const ELEMENT_SIZE: Record<number, number> = { [FLOAT]: 4, [INT32]: 4, [INT64]: 8, [FLOAT16]: 2, [DOUBLE]: 8, [BFLOAT16]: 2 };

/** bfloat16 bits (the top half of a float32's) as a number. */
function bf16ToFloat(bits: number): number {
  BF16_U32[0] = (bits & 0xffff) << 16;
  return BF16_F32[0];
}
const BF16_U32 = new Uint32Array(1);
const BF16_F32 = new Float32Array(BF16_U32.buffer);

function toNumber(v: unknown): number {
  if (typeof v === 'number') return v;
  if (v !== null && typeof v === 'object' && typeof (v as { toNumber?: unknown }).toNumber === 'function') return (v as { toNumber(): number }).toNumber();
  return Number(v);
}

interface Constant {
  dims: number[];
  data: Float64Array | Float32Array;
}

/** A TensorProto's values, checked against its dims before anything is allocated. */
function readTensor(t: TensorProto, what: string): Constant {
  const dims = (t.dims ?? []).map(toNumber);
  let count = 1;
  for (const d of dims) {
    if (!Number.isSafeInteger(d) || d < 0) throw formatError(`${what}: dimension ${d} is not a non-negative integer`);
    count *= d;
    if (count > MAX_ELEMENTS) throw formatError(`${what}: dims [${dims.join(', ')}] are too large`);
  }
  if (t.dataLocation === 1) throw formatError(`${what}: external data is not supported (save the model with its weights inside)`);
  const type = t.dataType ?? 0;
  const size = ELEMENT_SIZE[type];
  if (!size) throw formatError(`${what}: unsupported data type ${type}`);
  const raw = t.rawData;
  if (raw && raw.length > 0) {
    if (raw.length !== count * size) throw formatError(`${what}: dims [${dims.join(', ')}] need ${count * size} bytes, raw_data has ${raw.length}`);
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const out = type === FLOAT ? new Float32Array(count) : new Float64Array(count);
    for (let i = 0; i < count; i++) {
      out[i] =
        type === FLOAT ? view.getFloat32(4 * i, true)
        : type === DOUBLE ? view.getFloat64(8 * i, true)
        : type === FLOAT16 ? halfToFloat(view.getUint16(2 * i, true))
        : type === BFLOAT16 ? bf16ToFloat(view.getUint16(2 * i, true))
        : type === INT32 ? view.getInt32(4 * i, true)
        : Number(view.getBigInt64(8 * i, true));
    }
    return { dims, data: out };
  }
  const typed: ArrayLike<unknown> =
    type === FLOAT ? t.floatData ?? []
    : type === DOUBLE ? t.doubleData ?? []
    : type === INT64 ? t.int64Data ?? []
    : t.int32Data ?? []; // INT32, FLOAT16 and BFLOAT16 (as uint16 bit patterns) live in int32_data
  if (typed.length !== count) throw formatError(`${what}: dims [${dims.join(', ')}] need ${count} values, the tensor has ${typed.length}`);
  const out = type === FLOAT ? new Float32Array(count) : new Float64Array(count);
  for (let i = 0; i < count; i++) out[i] = type === FLOAT16 ? halfToFloat(toNumber(typed[i])) : type === BFLOAT16 ? bf16ToFloat(toNumber(typed[i])) : toNumber(typed[i]);
  return { dims, data: out };
}

function attr(n: NodeProto, name: string): OnnxNs.IAttributeProto | undefined {
  return (n.attribute ?? []).find((a) => a.name === name);
}
const attrInt = (n: NodeProto, name: string, dflt: number): number => {
  const a = attr(n, name);
  return a ? toNumber(a.i) : dflt;
};
const attrFloat = (n: NodeProto, name: string): number | undefined => {
  const a = attr(n, name);
  return a ? (a.f ?? 0) : undefined;
};
const attrString = (n: NodeProto, name: string, dflt: string): string => {
  const a = attr(n, name);
  return a?.s ? new TextDecoder().decode(a.s) : dflt;
};
const attrInts = (n: NodeProto, name: string): number[] | undefined => {
  const a = attr(n, name);
  return a ? (a.ints ?? []).map(toNumber) : undefined;
};

interface Graph {
  nodes: NodeProto[];
  producer: Map<string, NodeProto>;
  consumers: Map<string, NodeProto[]>;
  constants: Map<string, Constant>;
  inputs: Set<string>;
  outputs: string[];
  /** Elements constant folding may still produce (see foldConstant). */
  foldBudget: number;
}

function indexGraph(model: OnnxNs.ModelProto): Graph {
  const g = model.graph;
  if (!g) throw formatError('the model has no graph');
  const constants = new Map<string, Constant>();
  for (const t of g.initializer ?? []) constants.set(t.name ?? '', readTensor(t, `initializer '${t.name}'`));
  const producer = new Map<string, NodeProto>();
  const consumers = new Map<string, NodeProto[]>();
  const nodes = g.node ?? [];
  for (const n of nodes) {
    if (n.domain && n.domain !== 'ai.onnx') throw formatError(`${nodeLabel(n)} is in domain '${n.domain}', which this reader does not take`);
    for (const o of n.output ?? []) producer.set(o, n);
    for (const i of n.input ?? []) if (i) consumers.set(i, [...(consumers.get(i) ?? []), n]);
    if (n.opType === 'Constant') {
      const value = attr(n, 'value');
      if (!value?.t) throw formatError(`${nodeLabel(n)}: only tensor-valued Constant nodes are supported`);
      constants.set(n.output?.[0] ?? '', readTensor(value.t, nodeLabel(n)));
    }
  }
  const inputs = new Set((g.input ?? []).map((v) => v.name ?? '').filter((name) => !constants.has(name)));
  let held = 0;
  for (const c of constants.values()) held += c.data.length;
  return { nodes, producer, consumers, constants, inputs, outputs: (g.output ?? []).map((v) => v.name ?? ''), foldBudget: 4 * held + (1 << 20) };
}

/**
 * A constant input of a node: an initializer or Constant node, through Identity nodes, or
 * one computed from constants by the data-movement ops an exporter leaves unfolded
 * (torch.onnx.export before opset 9, or with do_constant_folding=False, builds W, R and B
 * from PyTorch's weights with Slice, Concat, Unsqueeze and the like).
 */
function constantOf(g: Graph, name: string, what: string): Constant {
  const c = foldConstant(g, name, 0);
  if (c) return c;
  throw formatError(`${what} '${name}' is not a constant (initializer or Constant node)`);
}

const FOLDABLE = new Set(['Identity', 'Cast', 'Slice', 'Concat', 'Unsqueeze', 'Squeeze', 'Transpose', 'Reshape']);

/** `name`'s value if constants determine it (memoised in g.constants), else null. */
function foldConstant(g: Graph, name: string, depth: number): Constant | null {
  const known = g.constants.get(name);
  if (known) return known;
  const p = g.producer.get(name);
  if (!p || !FOLDABLE.has(p.opType ?? '') || depth > 64) return null;
  const inputs = (p.input ?? []).filter((n) => n !== '');
  const values: Constant[] = [];
  for (const n of inputs) {
    const v = foldConstant(g, n, depth + 1);
    if (!v) return null;
    values.push(v);
  }
  const out = evalOp(g, p, values);
  if (!out) return null;
  g.foldBudget -= out.data.length;
  if (g.foldBudget < 0) throw formatError(`${nodeLabel(p)}: constant folding would produce more than the file's constants justify`);
  g.constants.set(name, out);
  return out;
}

const stridesOf = (dims: number[]): number[] => {
  const st = new Array<number>(dims.length).fill(1);
  for (let k = dims.length - 2; k >= 0; k--) st[k] = st[k + 1] * dims[k + 1];
  return st;
};

/** One foldable op on constant inputs (null when its form is not one exporters write). */
function evalOp(g: Graph, p: NodeProto, v: Constant[]): Constant | null {
  const x = v[0];
  if (!x) return null;
  const rank = x.dims.length;
  const axis = (a: number, r = rank) => (a < 0 ? a + r : a);
  switch (p.opType) {
    case 'Identity':
    case 'Cast': {
      const to = attrInt(p, 'to', FLOAT);
      if (p.opType === 'Cast' && to !== FLOAT && to !== DOUBLE && to !== INT32 && to !== INT64) return null;
      const data = p.opType === 'Cast' && (to === INT32 || to === INT64) ? Float64Array.from(x.data, Math.trunc) : x.data;
      return { dims: x.dims, data };
    }
    case 'Unsqueeze':
    case 'Squeeze': {
      const given = axesOf(g, p);
      let dims = x.dims.slice();
      if (p.opType === 'Unsqueeze') {
        if (!given) return null;
        const r = rank + given.length;
        const at = given.map((a) => axis(a, r)).sort((a, b) => a - b);
        if (at.some((a, k) => a < 0 || a >= r || a === at[k - 1])) return null;
        for (const a of at) dims.splice(a, 0, 1);
      } else {
        const drop = given ? new Set(given.map((a) => axis(a))) : new Set(dims.flatMap((d, k) => (d === 1 ? [k] : [])));
        if ([...drop].some((a) => dims[a] !== 1)) return null;
        dims = dims.filter((_, k) => !drop.has(k));
      }
      return { dims, data: x.data };
    }
    case 'Reshape': {
      if (!v[1]) return null;
      const shape = Array.from(v[1].data, Number);
      const dims = shape.map((d, k) => (d === 0 ? x.dims[k] : d));
      const known = dims.reduce((a, d) => (d === -1 ? a : a * d), 1);
      const fill = dims.indexOf(-1);
      if (fill >= 0) dims[fill] = known > 0 ? x.data.length / known : 0;
      if (dims.some((d) => !Number.isInteger(d) || d < 0) || dims.reduce((a, d) => a * d, 1) !== x.data.length) return null;
      return { dims, data: x.data };
    }
    case 'Transpose': {
      const perm = attrInts(p, 'perm') ?? x.dims.map((_, k) => rank - 1 - k);
      if (perm.length !== rank || !perm.slice().sort((a, b) => a - b).every((a, k) => a === k)) return null;
      const src = stridesOf(x.dims);
      const dims = perm.map((a) => x.dims[a]);
      return { dims, data: gatherStrided(x.data, 0, dims, perm.map((a) => src[a]), new Float64Array(x.data.length)) };
    }
    case 'Concat': {
      const a = axis(attrInt(p, 'axis', 0));
      if (a < 0 || a >= rank || v.some((c) => c.dims.length !== rank || c.dims.some((d, k) => k !== a && d !== x.dims[k]))) return null;
      const dims = x.dims.slice();
      dims[a] = v.reduce((s, c) => s + c.dims[a], 0);
      const outer = x.dims.slice(0, a).reduce((s, d) => s * d, 1);
      const inner = x.dims.slice(a + 1).reduce((s, d) => s * d, 1);
      const data = new Float64Array(outer * dims[a] * inner);
      let o = 0;
      for (let i = 0; i < outer; i++) {
        for (const c of v) {
          const n = c.dims[a] * inner;
          for (let j = 0; j < n; j++) data[o++] = c.data[i * n + j];
        }
      }
      return { dims, data };
    }
    case 'Slice': {
      const { starts, ends, axes, steps } = sliceParams(g, p);
      if (starts.length !== ends.length || axes.length !== starts.length || Array.from(steps).some((s) => s !== 1)) return null;
      if (Array.from(axes).some((a) => axis(a) < 0 || axis(a) >= rank)) return null;
      const lo = x.dims.map(() => 0);
      const hi = x.dims.slice();
      Array.from(axes).forEach((a0, k) => {
        const a = axis(a0);
        const clamp = (q: number) => Math.min(Math.max(q < 0 ? q + x.dims[a] : q, 0), x.dims[a]);
        lo[a] = clamp(starts[k]);
        hi[a] = Math.max(lo[a], clamp(ends[k]));
      });
      const dims = hi.map((h, k) => h - lo[k]);
      const src = stridesOf(x.dims);
      const offset = lo.reduce((o, l, k) => o + l * src[k], 0);
      return { dims, data: gatherStrided(x.data, offset, dims, src, new Float64Array(dims.reduce((n, d) => n * d, 1))) };
    }
    default:
      return null;
  }
}

const sameInts = (a: ArrayLike<number> | undefined, b: readonly number[]): boolean =>
  a !== undefined && a.length === b.length && b.every((v, i) => a[i] === v);

/**
 * Walk back from a tensor through data-movement ops to a graph input or an LSTM output;
 * `hops` are the ops passed through, in data order.
 */
function traceBack(g: Graph, name: string): { origin: string; hops: NodeProto[] } {
  const hops: NodeProto[] = [];
  let cur = name;
  for (let steps = 0; steps < 64; steps++) {
    if (g.inputs.has(cur)) return { origin: cur, hops: hops.reverse() };
    const p = g.producer.get(cur);
    if (!p) throw formatError(`value '${cur}' has no producer and is not a graph input`);
    if (p.opType === 'LSTM') return { origin: cur, hops: hops.reverse() };
    if (!['Transpose', 'Reshape', 'Squeeze', 'Identity', 'Gather'].includes(p.opType ?? '')) {
      throw formatError(`${nodeLabel(p)} sits on the LSTM data path; only Transpose, Reshape, Squeeze, Identity and a batch sort (Gather) can be taken there`);
    }
    hops.push(p);
    cur = p.input?.[0] ?? '';
  }
  throw formatError(`the data path through '${name}' is longer than 64 nodes`);
}

/** Check the data-movement ops between layers: Y [T, D, B, H] back to [T, B, D*H]. */
function checkJunction(g: Graph, hops: NodeProto[], D: number, where: string): void {
  const kinds = hops.map((n) => n.opType).filter((op) => op !== 'Identity');
  for (const n of hops) {
    if (n.opType === 'Transpose' && !sameInts(attrInts(n, 'perm'), [0, 2, 1, 3])) {
      throw formatError(`${nodeLabel(n)} ${where}: perm [${attrInts(n, 'perm')}] is not [0, 2, 1, 3]`);
    }
    if (n.opType === 'Reshape') {
      const shape = constantOf(g, n.input?.[1] ?? '', `${nodeLabel(n)} shape`).data;
      if (!sameInts(shape, [0, 0, -1])) throw formatError(`${nodeLabel(n)} ${where}: shape [${Array.from(shape)}] is not [0, 0, -1]`);
    }
    if (n.opType === 'Squeeze') {
      const axes = axesOf(g, n);
      if (!sameInts(axes, [1]) || D !== 1) throw formatError(`${nodeLabel(n)} ${where}: only the direction axis (1) of a one-direction LSTM can be squeezed`);
    }
  }
  const want = D === 1 ? ['Squeeze'] : ['Transpose', 'Reshape'];
  const ok = kinds.length === want.length && kinds.every((k, i) => k === want[i]);
  if (!ok) throw formatError(`${where}: expected ${D === 1 ? 'Squeeze(axis 1)' : 'Transpose [0, 2, 1, 3] then Reshape [0, 0, -1]'}, found ${kinds.join(' -> ') || 'nothing'}`);
}

/** A Slice node's starts, ends, axes and steps: inputs from opset 10, attributes before. */
function sliceParams(g: Graph, p: NodeProto): { starts: ArrayLike<number>; ends: ArrayLike<number>; axes: ArrayLike<number>; steps: ArrayLike<number> } {
  const inputs = p.input ?? [];
  if (inputs.length === 1 && attr(p, 'starts')) {
    const starts = attrInts(p, 'starts') ?? [];
    return { starts, ends: attrInts(p, 'ends') ?? [], axes: attrInts(p, 'axes') ?? starts.map((_, i) => i), steps: starts.map(() => 1) };
  }
  const starts = constantOf(g, inputs[1] ?? '', `${nodeLabel(p)} starts`).data;
  return {
    starts,
    ends: constantOf(g, inputs[2] ?? '', `${nodeLabel(p)} ends`).data,
    axes: inputs[3] ? constantOf(g, inputs[3], `${nodeLabel(p)} axes`).data : Array.from(starts, (_, i) => i),
    steps: inputs[4] ? constantOf(g, inputs[4], `${nodeLabel(p)} steps`).data : Array.from(starts, () => 1),
  };
}

/** A Squeeze or Unsqueeze node's axes: an input from opset 13, an attribute before (absent: none given). */
function axesOf(g: Graph, n: NodeProto): number[] | undefined {
  return n.input?.[1] ? Array.from(constantOf(g, n.input[1], `${nodeLabel(n)} axes`).data, Number) : attrInts(n, 'axes');
}

/**
 * Whether a value is zeros whatever its shape: a constant of zeros, a ConstantOfShape (or
 * ConstantFill) of zero, or an Expand, Slice, Reshape, Squeeze, Unsqueeze or Identity of one. torch.onnx.export
 * writes a model's initial state this way when it is called without one (Expand of a zero
 * constant for a fixed batch size, ConstantOfShape for a dynamic one).
 */
function isZeros(g: Graph, name: string): boolean {
  let cur = name;
  for (let hops = 0; hops < 16; hops++) {
    const c = g.constants.get(cur);
    if (c) return c.data.every((v) => v === 0);
    if (g.inputs.has(cur)) return false;
    const p = g.producer.get(cur);
    if (!p) return false;
    if (p.opType === 'ConstantOfShape') {
      const value = attr(p, 'value')?.t;
      return !value || readTensor(value, `${nodeLabel(p)} value`).data.every((v) => v === 0);
    }
    // ConstantFill: the experimental op torch.onnx.export writes for zeros before opset 9.
    if (p.opType === 'ConstantFill') return (attrFloat(p, 'value') ?? 0) === 0;
    if (!['Expand', 'Slice', 'Reshape', 'Squeeze', 'Unsqueeze', 'Identity'].includes(p.opType ?? '')) return false;
    cur = p.input?.[0] ?? '';
  }
  return false;
}

/** `name` back through nodes of the given kinds to the value that feeds them. */
function through(g: Graph, name: string, ops: readonly string[]): string {
  let cur = name;
  for (let hops = 0; hops < 16; hops++) {
    const p = g.producer.get(cur);
    if (!p || !ops.includes(p.opType ?? '')) break;
    cur = p.input?.[0] ?? '';
  }
  return cur;
}
const skipCasts = (g: Graph, name: string): string => through(g, name, ['Cast', 'Identity']);
const skipIdentity = (g: Graph, name: string): string => through(g, name, ['Identity']);

/**
 * pack_padded_sequence(..., enforce_sorted=False) exports as a sort of the batch by length:
 * TopK of the lengths, whose indices Gather the rows of the input (and of h0 / c0) and
 * whose values are the LSTM's sequence_lens; the outputs are Gathered back by the inverse
 * permutation (ScatterElements of Range 0..B over those indices). The LSTM treats rows
 * independently and takes unsorted lengths, so the sort and its inverse cancel: forward
 * takes the file's inputs as they are. These find the TopK a value belongs to.
 */
function sortOfIndices(g: Graph, name: string): NodeProto | null {
  const cur = skipCasts(g, name);
  const p = g.producer.get(cur);
  return p?.opType === 'TopK' && p.output?.[1] === cur ? p : null;
}

/** The TopK whose permutation `name` undoes, if it is ScatterElements(_, indices, Range(0, B, 1)) along axis 0. */
function unsortOf(g: Graph, name: string): NodeProto | null {
  const p = g.producer.get(skipCasts(g, name));
  if (p?.opType !== 'ScatterElements' || attrInt(p, 'axis', 0) !== 0) return null;
  const range = g.producer.get(skipCasts(g, p.input?.[2] ?? ''));
  if (range?.opType !== 'Range') return null;
  const scalar = (input: string | undefined) => {
    const c = g.constants.get(skipCasts(g, input ?? ''));
    return c && c.data.length === 1 ? c.data[0] : undefined;
  };
  if (scalar(range.input?.[0]) !== 0 || scalar(range.input?.[2]) !== 1) return null;
  return sortOfIndices(g, p.input?.[1] ?? '');
}

/** A Gather along `axis` by a sort's indices: the sort, else null. */
function sortGather(g: Graph, n: NodeProto | undefined, axis: number): NodeProto | null {
  if (n?.opType !== 'Gather' || attrInt(n, 'axis', 0) !== axis) return null;
  return sortOfIndices(g, n.input?.[1] ?? '');
}

/** Where a layer's initial state comes from: nowhere (zeros), or rows of a graph input (sorted by a TopK). */
type StateSource = { kind: 'zeros' } | { kind: 'input'; name: string; sort: NodeProto | null };

/**
 * A layer's initial state: absent, zeros (see isZeros), a graph input (one layer) or a
 * Slice of one along axis 0 (its rows for this layer).
 */
function stateSource(g: Graph, name: string | undefined, layer: number, D: number, layers: number, what: string): StateSource {
  if (!name || isZeros(g, name)) return { kind: 'zeros' };
  // A graph input, or its batch (axis 1) sorted by lengths.
  const input = (v: string): { name: string; sort: NodeProto | null } | null => {
    if (g.inputs.has(v)) return { name: v, sort: null };
    const p = g.producer.get(v);
    const sort = sortGather(g, p, 1);
    return sort && g.inputs.has(p?.input?.[0] ?? '') ? { name: p?.input?.[0] ?? '', sort } : null;
  };
  const whole = input(name);
  if (whole) {
    if (layers !== 1) throw formatError(`${what} of layer ${layer} is a whole graph input; stacked layers must slice theirs`);
    return { kind: 'input', ...whole };
  }
  const p = g.producer.get(name);
  const sliced = p?.opType === 'Slice' ? input(p.input?.[0] ?? '') : null;
  if (!p || !sliced) {
    throw formatError(`${what} of layer ${layer} must be a graph input, a Slice of one or zeros, found ${p ? nodeLabel(p) : g.constants.has(name) ? `a constant '${name}' that is not all zeros` : `'${name}'`}`);
  }
  const { starts, ends, axes, steps } = sliceParams(g, p);
  if (!sameInts(starts, [layer * D]) || !sameInts(ends, [(layer + 1) * D]) || !sameInts(axes, [0]) || !sameInts(steps, [1])) {
    throw formatError(`${nodeLabel(p)}: ${what} of layer ${layer} must be rows ${layer * D}..${(layer + 1) * D} of '${p.input?.[0]}'`);
  }
  return { kind: 'input', ...sliced };
}

/**
 * Every layer must take its initial state from the same place, so forward's h0 / c0 is it,
 * and a state sorted by lengths must be sorted as the input is.
 */
function sameSource(sources: StateSource[], what: string, sort: NodeProto | null): void {
  const key = (s: StateSource) => (s.kind === 'zeros' ? 'zeros' : `graph input '${s.name}'`);
  const bad = sources.findIndex((s) => key(s) !== key(sources[0]));
  if (bad >= 0) throw formatError(`${what}: layer 0 starts from ${key(sources[0])}, layer ${bad} from ${key(sources[bad])}; every layer must start from the same place`);
  for (const s of sources) {
    if (s.kind === 'input' && s.sort !== sort) throw formatError(`${what}: its batch must be sorted as the input's is (the same Gather by lengths), or not at all when the input is not`);
  }
}

/**
 * A layer's sequence_lens: absent, or a graph input (through Identity or Cast) that every
 * layer shares, or the values of a sort of one (TopK, with `sort` set).
 */
function lengthsSource(g: Graph, name: string | undefined, where: string): { name: string; sort: NodeProto | null } | null {
  if (!name) return null;
  let cur = skipCasts(g, name);
  let sort: NodeProto | null = null;
  const p = g.producer.get(cur);
  if (p?.opType === 'TopK' && p.output?.[0] === cur) {
    sort = p;
    cur = skipCasts(g, p.input?.[0] ?? '');
  }
  if (!g.inputs.has(cur)) throw formatError(`${where}: sequence_lens must be a graph input (forward's lengths) or its sort, found '${name}'`);
  return { name: cur, sort };
}

/**
 * A Linear head on the stack's output sequence, as torch.onnx.export writes nn.Linear on a
 * 3-D input, or on each sequence's end (SequenceModel's outputMode 'last' / 'final').
 */
export interface OnnxHead {
  /** [outFeatures, inFeatures], PyTorch's Linear.weight. */
  weight: Float32Array;
  bias: Float32Array | null;
  inFeatures: number;
  outFeatures: number;
  /** What it reads: every step, the output's last step, or the last layer's final states. */
  reads: 'sequence' | 'last' | 'final';
}

/**
 * A graph output that is a Linear head: Add(MatMul(S, W), b) (either Add order) or
 * MatMul(S, W), with W [F, O] and b [O] constants, or Gemm(S, W, b) with W [O, F]
 * (transB, as torch.onnx.export writes nn.Linear on a 2-D input) or [F, O]; null when it
 * is not that shape.
 */
function findHead(g: Graph, name: string): (Omit<OnnxHead, 'reads'> & { input: string }) | null {
  const constant = (n: string | undefined): Constant | null => foldConstant(g, n ?? '', 0);
  const gemm = g.producer.get(skipIdentity(g, name));
  if (gemm?.opType === 'Gemm') {
    const w = constant(gemm.input?.[1]);
    const b = gemm.input?.[2] ? constant(gemm.input[2]) : null;
    const plain = attrInt(gemm, 'transA', 0) === 0 && (attrFloat(gemm, 'alpha') ?? 1) === 1 && (attrFloat(gemm, 'beta') ?? 1) === 1;
    if (!w || w.dims.length !== 2 || !plain || (gemm.input?.[2] && (!b || b.dims.length !== 1))) return null;
    const transB = attrInt(gemm, 'transB', 0) !== 0;
    const [O, F] = transB ? w.dims : [w.dims[1], w.dims[0]];
    if (b && b.dims[0] !== O) throw formatError(`${nodeLabel(gemm)}: a head of ${O} outputs with a bias of ${b.dims[0]}`);
    const weight = transB ? Float32Array.from(w.data) : transpose2d(w.data, F, O);
    return { weight, bias: b ? Float32Array.from(b.data) : null, inFeatures: F, outFeatures: O, input: gemm.input?.[0] ?? '' };
  }
  let p = gemm;
  let bias: Constant | null = null;
  if (p?.opType === 'Add') {
    const [a, b] = p.input ?? [];
    const ca = constant(a);
    const cb = ca ? null : constant(b);
    bias = ca ?? cb;
    if (!bias || bias.dims.length !== 1) return null;
    p = g.producer.get(skipIdentity(g, (ca ? b : a) ?? ''));
  }
  if (p?.opType !== 'MatMul') return null;
  const w = constant(p.input?.[1]);
  if (!w || w.dims.length !== 2) return null;
  const [F, O] = w.dims;
  if (bias && bias.dims[0] !== O) throw formatError(`${nodeLabel(p)}: a head of ${O} outputs with a bias of ${bias.dims[0]}`);
  const weight = transpose2d(w.data, F, O); // MatMul's [F, O] to Linear's [O, F]
  return { weight, bias: bias ? Float32Array.from(bias.data) : null, inFeatures: F, outFeatures: O, input: p.input?.[0] ?? '' };
}

/**
 * The graph's outputs must be the stack's own, so that forward gives the file's outputs:
 * the last layer's Y (raw, or to [T, B, D*H] by the junction ops, then batch-first), and
 * Y_h / Y_c (one layer's, or every layer's concatenated in order along axis 0). With
 * `head`, one output may instead be a Linear head on the output sequence (returned).
 */
function checkOutputs(g: Graph, ordered: NodeProto[], D: number, batchFirst: boolean, sort: NodeProto | null, head = false): OnnxHead | null {
  const L = ordered.length;
  const last = ordered[L - 1];
  // What a value of the stack is: the output sequence or a state (hn / cn); else LSTM_FORMAT.
  const check = (name: string, where: string): 'sequence' | 'state' => {
    let cur = skipIdentity(g, name);
    let p = g.producer.get(cur);
    if (!p) throw formatError(`${where} is not computed from the LSTM stack`);
    if (sort) {
      // Rows sorted by length go back to the input's order: a Gather along the batch axis
      // (0 for a batch-first output, else 1) by the inverse of the input's sort.
      const unsort = p.opType === 'Gather' ? unsortOf(g, p.input?.[1] ?? '') : null;
      if (unsort !== sort) throw formatError(`${where}: the input's batch is sorted by length, so every output must be Gathered back by the inverse permutation, found ${nodeLabel(p)}`);
      const axis = attrInt(p, 'axis', 0);
      cur = skipIdentity(g, p.input?.[0] ?? '');
      p = g.producer.get(cur);
      if (!p) throw formatError(`${where} is not computed from the LSTM stack`);
      const sequence = p.opType !== 'Concat' && !(p.opType === 'LSTM' && (p.output ?? []).indexOf(cur) > 0);
      const want = sequence && batchFirst ? 0 : 1;
      if (axis !== want) throw formatError(`${where}: the Gather back to the input's order is along axis ${axis}, expected the batch axis ${want}`);
    }
    if (p.opType === 'Concat') {
      const parts = (p.input ?? []).map((n) => skipIdentity(g, n));
      const ok = attrInt(p, 'axis', 0) === 0 && [1, 2].some((k) => parts.length === L && parts.every((n, l) => n === ordered[l].output?.[k]));
      if (!ok || L === 1) throw formatError(`${nodeLabel(p)} makes ${where}: only every layer's Y_h or Y_c, concatenated in order along axis 0, is understood`);
      return 'state';
    }
    if (p.opType === 'LSTM') {
      const k = (p.output ?? []).indexOf(cur);
      if (p === last && k === 0 && !batchFirst) return 'sequence';
      if (L === 1 && (k === 1 || k === 2)) return 'state';
      throw formatError(`${where} is output ${k} of ${nodeLabel(p)}; the stack's outputs are its last layer's Y and every layer's Y_h and Y_c`);
    }
    let trace: ReturnType<typeof traceBack>;
    try {
      trace = traceBack(g, cur);
    } catch (err) {
      throw formatError(
        `${where} is not the LSTM stack's own output (${(err as Error).message.replace(/^ONNX: /, '')}); loadOnnx(bytes, { stackOnly: true }) (command line: --stack-only) takes the LSTM out of it, and SequenceModel.fromOnnx takes an LSTM with a Linear head`,
      );
    }
    if (trace.origin !== last.output?.[0]) throw formatError(`${where} does not come from the last LSTM layer's Y`);
    let hops = trace.hops;
    if (batchFirst) {
      const end = hops[hops.length - 1];
      if (end?.opType !== 'Transpose' || !sameInts(attrInts(end, 'perm'), [1, 0, 2])) {
        throw formatError(`${where}: the input is batch-first, so the output must end in a Transpose [1, 0, 2]`);
      }
      hops = hops.slice(0, -1);
    }
    checkJunction(g, hops, D, `after the last layer (${where})`);
    return 'sequence';
  };
  // A single index, constant: Gather's indices (a scalar, or one value)
  const constIndex = (n: string | undefined): number | null => {
    const k = foldConstant(g, n ?? '', 0);
    return k && k.data.length === 1 && k.dims.length <= 1 ? k.data[0] : null;
  };
  // Row r (counted from the end when negative) of the last layer's Y_h: every layer's Y_h
  // concatenated (rows layer * D + direction), or one layer's own.
  const finalRow = (name: string): number | null => {
    const p = g.producer.get(skipIdentity(g, name));
    if (p?.opType !== 'Gather' || attrInt(p, 'axis', 0) !== 0) return null;
    const r = constIndex(p.input?.[1]);
    const src = skipIdentity(g, p.input?.[0] ?? '');
    const q = g.producer.get(src);
    const rows = L * D;
    const ofHn = q?.opType === 'Concat' ? (q.input ?? []).every((n, l) => skipIdentity(g, n) === ordered[l]?.output?.[1]) && (q.input ?? []).length === L : q === last && last.output?.[1] === src && L === 1;
    if (!ofHn || r === null || !Number.isInteger(r) || r < -rows || r >= rows) return null;
    return r < 0 ? rows + r : r;
  };
  // What a head reads when it is not the sequence: 'final' (the last layer's final states,
  // its directions side by side) or 'last' (the output's last step); null if neither.
  const perSequence = (name: string): 'last' | 'final' | null => {
    const cur = skipIdentity(g, name);
    const p = g.producer.get(cur);
    if (!p) return null;
    const lastLayer = (L - 1) * D;
    // torch: hn[-1] (one direction)
    if (D === 1 && finalRow(cur) === lastLayer) return 'final';
    // torch: torch.cat((hn[-2], hn[-1]), 1) (two directions)
    if (p.opType === 'Concat' && D === 2 && [1, -1].includes(attrInt(p, 'axis', 0)) && (p.input ?? []).length === 2) {
      if (finalRow(p.input![0]) === lastLayer && finalRow(p.input![1]) === lastLayer + 1) return 'final';
    }
    // exportOnnx: Reshape(Transpose(Y_h, [1, 0, 2]), [0, -1])
    if (p.opType === 'Reshape') {
      const t = g.producer.get(skipIdentity(g, p.input?.[0] ?? ''));
      const shape = foldConstant(g, p.input?.[1] ?? '', 0);
      if (t?.opType === 'Transpose' && sameInts(attrInts(t, 'perm'), [1, 0, 2]) && skipIdentity(g, t.input?.[0] ?? '') === last.output?.[1] && shape && sameInts(Array.from(shape.data), [0, -1])) return 'final';
    }
    // torch: out[:, -1] (out[-1] time-major): a Gather of the scalar index -1 along the time
    // axis of the sequence the stack gives (batch-first: after its Transpose)
    if (p.opType === 'Gather' && constIndex(p.input?.[1]) === -1 && foldConstant(g, p.input?.[1] ?? '', 0)!.dims.length === 0 && attrInt(p, 'axis', 0) === (batchFirst ? 1 : 0)) {
      try {
        return check(p.input?.[0] ?? '', `the head's input`) === 'sequence' ? 'last' : null;
      } catch {
        return null;
      }
    }
    return null;
  };
  let found: OnnxHead | null = null;
  for (const out of g.outputs) {
    const where = `graph output '${out}'`;
    const h = head ? findHead(g, out) : null;
    if (!h) {
      check(out, where);
      continue;
    }
    if (found) throw formatError(`${where} is a second Linear head; one is understood`);
    const reads = perSequence(h.input) ?? ('sequence' as const);
    if (reads === 'sequence') {
      const readable = `${where}: the head must read the output sequence, its last step, or the last layer's final states (hn[-1] / Y_h)`;
      let kind: 'sequence' | 'state';
      try {
        kind = check(h.input, `${where}'s head input`);
      } catch (err) {
        throw formatError(`${readable}; ${(err as Error).message.replace(/^ONNX: /, '')}`);
      }
      if (kind !== 'sequence') throw formatError(`${readable}, not another state`);
    }
    found = { weight: h.weight, bias: h.bias, inFeatures: h.inFeatures, outFeatures: h.outFeatures, reads };
  }
  return found;
}

export interface LoadOnnxOptions {
  backend?: BackendChoice;
  /**
   * Take the LSTM stack out of a larger graph, e.g. one with a Linear head after it: the
   * graph's outputs need not be the stack's, and forward gives the stack's (output, hn, cn).
   * Without it such a graph is LSTM_FORMAT, so forward never silently differs from the file.
   */
  stackOnly?: boolean;
}

/**
 * Build an LSTM from an ONNX file: one LSTM node, or a stack as torch.onnx.export writes
 * it. forward(x, { h0, c0, lengths }) then takes the file's inputs (input / X, h0 /
 * initial_h, c0 / initial_c, sequence_lens) and gives its outputs; ONNX's Y
 * [T, D, B, H] comes back in PyTorch's layout [T, B, D*H] (the same numbers).
 */
export function loadOnnx(bytes: Uint8Array, opts?: LoadOnnxOptions): LSTM {
  const options = optionsArg(opts, 'loadOnnx options', ['backend', 'stackOnly']);
  if (options.stackOnly !== undefined && typeof options.stackOnly !== 'boolean') {
    throw new LstmError('LSTM_OPTION', `loadOnnx options.stackOnly: expected a boolean, got ${describe(options.stackOnly)}`);
  }
  return readStack(bytes, options, options.stackOnly ? 'stack' : 'graph').lstm;
}

/**
 * An LSTM stack with a Linear head on its output sequence (as torch.onnx.export writes an
 * nn.LSTM followed by an nn.Linear): the stack, and the head's weights in PyTorch's layout.
 * SequenceModel.fromOnnx builds on it.
 */
export function loadOnnxWithHead(bytes: Uint8Array, opts?: { backend?: BackendChoice }): { lstm: LSTM; head: OnnxHead } {
  const { lstm, head } = readStack(bytes, optionsArg(opts, 'fromOnnx options', ['backend']), 'head');
  if (head) return { lstm, head };
  lstm.dispose();
  throw formatError('no graph output is a Linear head (MatMul, then Add) on the LSTM output sequence; loadOnnx reads a graph of the LSTM alone');
}

/**
 * The stack of a graph. 'graph': its outputs must be the stack's; 'stack': they are not
 * checked; 'head': one of them may be a Linear head on the output sequence.
 */
function readStack(bytes: Uint8Array, options: { backend?: BackendChoice }, outputs: 'graph' | 'stack' | 'head'): { lstm: LSTM; head: OnnxHead | null } {
  if (!(bytes instanceof Uint8Array)) throw new LstmError('LSTM_FORMAT', `loadOnnx: expected a Uint8Array, got ${describe(bytes)}`);
  let model: OnnxNs.ModelProto;
  try {
    model = onnxProto().ModelProto.decode(bytes);
  } catch (err) {
    throw formatError(`not a valid ONNX protobuf (${(err as Error).message})`);
  }
  const g = indexGraph(model);
  const lstmNodes = g.nodes.filter((n) => n.opType === 'LSTM');
  if (lstmNodes.length === 0) throw formatError('the graph has no LSTM node');

  // Order the layers by following the data path from a graph input.
  const ordered: NodeProto[] = [];
  let batchFirst = false;
  let inputSort: NodeProto | null = null;
  const byOrigin = new Map<string, NodeProto>();
  for (const n of lstmNodes) {
    const { origin, hops } = traceBack(g, n.input?.[0] ?? '');
    if (byOrigin.has(origin)) throw formatError(`${nodeLabel(n)} and ${nodeLabel(byOrigin.get(origin)!)} read the same value: branching graphs are not a stack`);
    byOrigin.set(origin, n);
    if (g.inputs.has(origin)) {
      if (ordered.length) throw formatError(`${nodeLabel(n)} and ${nodeLabel(ordered[0])} both read a graph input`);
      ordered.push(n);
      const kinds = hops.filter((h) => h.opType !== 'Identity');
      if (kinds[0]?.opType === 'Gather') {
        // pack_padded_sequence's sort of the batch (axis 0 before a batch-first Transpose, else 1)
        const gather = kinds.shift()!;
        inputSort = sortGather(g, gather, kinds.length > 0 ? 0 : 1);
        if (!inputSort) throw formatError(`${nodeLabel(gather)} before the first LSTM: only a sort of the batch by the lengths (pack_padded_sequence) is understood`);
      }
      if (kinds.length === 1 && kinds[0].opType === 'Transpose' && sameInts(attrInts(kinds[0], 'perm'), [1, 0, 2])) batchFirst = true;
      else if (kinds.length > 0) throw formatError(`${nodeLabel(kinds[0])} before the first LSTM: only a batch-first Transpose [1, 0, 2] is understood`);
    }
  }
  if (!ordered.length) throw formatError('no LSTM node reads a graph input');
  for (;;) {
    const last = ordered[ordered.length - 1];
    const next = byOrigin.get(last.output?.[0] ?? '');
    if (!next) break;
    // A graph whose LSTM feeds itself (directly or around a loop) is a cycle, not a stack.
    if (ordered.includes(next)) throw formatError(`${nodeLabel(next)} is part of a cycle`);
    ordered.push(next);
  }
  if (ordered.length !== lstmNodes.length) throw formatError('the LSTM nodes do not form a single chain');

  // Layer attributes must agree: one LSTM configuration serves the whole stack.
  const first = ordered[0];
  const direction = attrString(first, 'direction', 'forward');
  if (!['forward', 'reverse', 'bidirectional'].includes(direction)) throw formatError(`${nodeLabel(first)}: unknown direction '${direction}'`);
  const D = direction === 'bidirectional' ? 2 : 1;
  const H = attrInt(first, 'hidden_size', 0);
  const L = ordered.length;
  const layers = ordered.map((n, l) => {
    const where = nodeLabel(n);
    if (attrInt(n, 'layout', 0) !== 0) throw formatError(`${where}: layout=1 (batch-major LSTM) is not supported; ONNX Runtime's CPU kernel refuses it too`);
    if (attrString(n, 'direction', 'forward') !== direction || attrInt(n, 'hidden_size', 0) !== H) {
      throw formatError(`${where}: direction and hidden_size must match the first layer's`);
    }
    const inputs = n.input ?? [];
    const W = constantOf(g, inputs[1] ?? '', `${where} W`);
    const R = constantOf(g, inputs[2] ?? '', `${where} R`);
    const B = inputs[3] ? constantOf(g, inputs[3], `${where} B`) : undefined;
    const P = inputs[7] ? constantOf(g, inputs[7], `${where} P`) : undefined;
    const I = W.dims[2];
    if (H < 1 || W.dims.length !== 3 || W.dims[0] !== D || W.dims[1] !== 4 * H) throw formatError(`${where}: W has dims [${W.dims}], expected [${D}, ${4 * H}, I]`);
    if (!sameInts(R.dims, [D, 4 * H, H])) throw formatError(`${where}: R has dims [${R.dims}], expected [${D}, ${4 * H}, ${H}]`);
    if (B && !sameInts(B.dims, [D, 8 * H])) throw formatError(`${where}: B has dims [${B.dims}], expected [${D}, ${8 * H}]`);
    if (P && !sameInts(P.dims, [D, 3 * H])) throw formatError(`${where}: P has dims [${P.dims}], expected [${D}, ${3 * H}]`);
    if (l > 0) {
      if (I !== D * H) throw formatError(`${where}: input size ${I} is not the previous layer's ${D * H}`);
      checkJunction(g, traceBack(g, inputs[0] ?? '').hops, D, `between layers ${l - 1} and ${l}`);
    }
    const h = stateSource(g, inputs[5], l, D, L, 'initial_h');
    const c = stateSource(g, inputs[6], l, D, L, 'initial_c');
    const lengths = lengthsSource(g, inputs[4], where);
    const activations = activationsFromOnnx(
      attr(n, 'activations')?.strings?.map((s) => new TextDecoder().decode(s)),
      attr(n, 'activation_alpha')?.floats ?? undefined,
      attr(n, 'activation_beta')?.floats ?? undefined,
      D,
      `${where} activations`,
    );
    return { n, W, R, B, P, I, h, c, lengths, activations, clip: attrFloat(n, 'clip'), inputForget: attrInt(n, 'input_forget', 0) !== 0 };
  });
  sameSource(layers.map((x) => x.h), 'initial_h', inputSort);
  sameSource(layers.map((x) => x.c), 'initial_c', inputSort);
  const lengths = layers[0].lengths;
  if (layers.some((x) => x.lengths?.name !== lengths?.name || x.lengths?.sort !== lengths?.sort)) throw formatError('every layer must take the same sequence_lens (forward\'s lengths)');
  if ((lengths?.sort ?? null) !== inputSort) {
    throw formatError(inputSort ? 'the input\'s batch is sorted by lengths, so sequence_lens must be that sort\'s values' : 'sequence_lens is sorted, but the input\'s batch is not');
  }
  const head = outputs === 'stack' ? null : checkOutputs(g, ordered, D, batchFirst, inputSort, outputs === 'head');
  if (head?.reads === 'last' && lengths) {
    // With sequence_lens a shorter row's last step is padding (zeros), not its last valid
    // step as outputMode 'last' reads it.
    throw formatError("the head reads the output's last step, which sequence_lens leaves as padding (zeros) in shorter rows: not each row's last valid step; read hn[-1] (Y_h) instead");
  }
  const key = (x: (typeof layers)[number]) => JSON.stringify([x.activations, x.clip, x.inputForget, !!x.B, !!x.P]);
  for (const x of layers.slice(1)) {
    if (key(x) !== key(layers[0])) throw formatError(`${nodeLabel(x.n)}: activations, clip, input_forget, bias and peepholes must match the first layer's`);
  }
  const [gate, cell, hidden] = layers[0].activations;
  const clip = layers[0].clip;
  const lstm = new LSTM({
    inputSize: layers[0].I,
    hiddenSize: H,
    numLayers: L,
    direction: direction as LSTMConfig['direction'],
    batchFirst,
    bias: layers[0].B !== undefined,
    peephole: layers[0].P ? 'diagonal' : 'none',
    gateActivation: gate,
    cellActivation: cell,
    hiddenActivation: hidden,
    clip: clip !== undefined && clip > 0 ? clip : undefined,
    coupledInputForget: layers[0].inputForget,
    backend: options.backend ?? 'auto',
    seed: 0,
  });
  try {
    const dict: Record<string, Tensor> = {};
    layers.forEach((x, l) => {
      const f32 = (c: Constant | undefined) => (c ? Float32Array.from(c.data) : undefined);
      Object.assign(dict, onnxToStateDict({ W: f32(x.W)!, R: f32(x.R)!, B: f32(x.B), P: f32(x.P) }, D, H, x.I, l));
    });
    lstm.loadStateDict(dict);
    if (head && head.inFeatures !== D * H) throw formatError(`the head takes ${head.inFeatures} features, the LSTM gives ${D * H}`);
    return { lstm, head };
  } catch (err) {
    lstm.dispose();
    throw err;
  }
}

export interface ExportOnnxOptions {
  /** ONNX opset, 10..21 (default 14). */
  opset?: number;
  /** Add an int32 [B] input `lengths` (sequence_lens of every layer). */
  lengths?: boolean;
}

/** What exportOnnx needs of a SequenceModel (an LSTM and its Linear head), without importing it. */
interface WithHead {
  lstm: LSTM;
  head: { weight: Float32Array; bias: Float32Array | null; inFeatures: number; outFeatures: number };
  /** What the head reads (SequenceModel's outputMode); 'sequence' when absent. */
  outputMode?: 'sequence' | 'last' | 'final';
}

function isWithHead(m: unknown): m is WithHead {
  if (m === null || typeof m !== 'object') return false;
  const { lstm, head } = m as Partial<WithHead>;
  return lstm instanceof LSTM && head !== null && typeof head === 'object' && head.weight instanceof Float32Array && head.weight.length === head.inFeatures * head.outFeatures;
}

/**
 * Write the model as ONNX: inputs `input` ([T, B, I], or [B, T, I] with batchFirst),
 * `h0`, `c0` ([L*D, B, Hout]) and optionally `lengths`; outputs `output`, `hn`, `cn`
 * shaped as forward returns them; T and B dynamic. Stacked layers become stacked LSTM nodes.
 * A SequenceModel exports with its head: `output` is then the head's ([..., outputSize]),
 * a MatMul (and Add) after the LSTM.
 */
export function exportOnnx(model: LSTM | WithHead, opts?: ExportOnnxOptions): Uint8Array {
  const options = optionsArg(opts, 'exportOnnx options', ['opset', 'lengths']);
  const head = isWithHead(model) ? model.head : null;
  const lstm = isWithHead(model) ? model.lstm : model;
  if (!(lstm instanceof LSTM)) throw new LstmError('LSTM_OPTION', `exportOnnx: expected an LSTM or a SequenceModel, got ${describe(model)}`);
  // A head per sequence reads the last layer's Y_h ('final'; 'last' too for a forward LSTM,
  // where they are equal, lengths or not), or the output's last step ('last' of a reverse or
  // bidirectional one, which lengths would put at a different step in every row: not
  // expressed).
  const mode = isWithHead(model) ? (model.outputMode ?? 'sequence') : 'sequence';
  const fromState = mode === 'final' || (mode === 'last' && lstm.config.direction === 'forward');
  if (mode === 'last' && !fromState && options.lengths) {
    throw new LstmError('LSTM_OPTION', `exportOnnx: a ${lstm.config.direction} model with outputMode 'last' exports without lengths only (its head reads the last step of each row); outputMode 'final' exports with them`);
  }
  const opset = options.opset ?? 14;
  if (!Number.isInteger(opset) || opset < 10 || opset > 21) throw new LstmError('LSTM_OPTION', `opset: expected an integer in 10..21, got ${describe(opset)}`);
  const c = lstm.config;
  if (c.projSize > 0) throw new LstmError('LSTM_FORMAT', 'exportOnnx: the ONNX LSTM operator has no projection (projSize); it cannot express this model');
  if (c.peephole === 'full') throw new LstmError('LSTM_FORMAT', "exportOnnx: the ONNX LSTM operator has only diagonal peepholes; peephole: 'full' cannot be expressed");
  const onnx = onnxProto();
  const D = c.numDirections;
  const H = c.hiddenSize;
  const L = c.numLayers;
  const dict = lstm.stateDict();
  const initializer: OnnxNs.ITensorProto[] = [];
  const nodes: OnnxNs.INodeProto[] = [];
  const floatTensor = (name: string, dims: number[], data: Float32Array): void => {
    initializer.push({ name, dims, dataType: FLOAT, rawData: new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)) });
  };
  const int64Tensor = (name: string, values: number[]): void => {
    initializer.push({ name, dims: [values.length], dataType: INT64, rawData: new Uint8Array(BigInt64Array.from(values.map(BigInt)).buffer) });
  };
  const node = (opType: string, input: string[], output: string[], attribute: OnnxNs.IAttributeProto[] = []): void => {
    nodes.push({ opType, input, output, name: `${opType}_${nodes.length}`, attribute });
  };
  const A = onnx.AttributeProto.AttributeType;
  const ints = (name: string, v: number[]): OnnxNs.IAttributeProto => ({ name, type: A.INTS, ints: v });
  const int = (name: string, v: number): OnnxNs.IAttributeProto => ({ name, type: A.INT, i: v });
  const str = (name: string, v: string): OnnxNs.IAttributeProto => ({ name, type: A.STRING, s: new TextEncoder().encode(v) });
  const { activations, alpha, beta } = activationsToOnnx(Array.from({ length: D }, (_, d) => configActivations(c, d)));
  const lstmAttrs: OnnxNs.IAttributeProto[] = [
    int('hidden_size', H),
    str('direction', c.direction),
    { name: 'activations', type: A.STRINGS, strings: activations.map((s) => new TextEncoder().encode(s)) },
  ];
  if (alpha.length) lstmAttrs.push({ name: 'activation_alpha', type: A.FLOATS, floats: alpha });
  if (beta.length) lstmAttrs.push({ name: 'activation_beta', type: A.FLOATS, floats: beta });
  if (c.clip > 0) lstmAttrs.push({ name: 'clip', type: A.FLOAT, f: c.clip });
  if (c.coupledInputForget) lstmAttrs.push(int('input_forget', 1));

  // The graph has no node or initializer it does not need (onnxruntime warns about unused
  // initializers on every session it creates): one layer takes h0 and c0 as they are and
  // writes hn and cn itself; the last layer's output is the graph's unless batch-first.
  let x = 'input';
  // The stack's output is the graph's, or the head's input.
  const stackOut = head ? 'lstm_output' : 'output';
  if (head && head.inFeatures !== D * c.outSize) throw new LstmError('LSTM_OPTION', `exportOnnx: the head takes ${head.inFeatures} features, the LSTM gives ${D * c.outSize}`);
  if (c.batchFirst) {
    node('Transpose', ['input'], ['input_time_major'], [ints('perm', [1, 0, 2])]);
    x = 'input_time_major';
  }
  if (L > 1) int64Tensor('axis0', [0]);
  // (the last layer's Y is converted only when a head does not read Y_h instead)
  const yConverted = L > 1 || !fromState;
  if (D === 1 && opset >= 13 && yConverted) int64Tensor('axis1', [1]);
  if (D === 2 && yConverted) int64Tensor('merge_directions', [0, 0, -1]);
  const hn: string[] = [];
  const cn: string[] = [];
  for (let l = 0; l < L; l++) {
    const I = l === 0 ? c.inputSize : D * H;
    const t = stateDictToOnnx(dict, D, H, I, l, c.bias, c.peephole === 'diagonal');
    floatTensor(`W_${l}`, [D, 4 * H, I], t.W);
    floatTensor(`R_${l}`, [D, 4 * H, H], t.R);
    if (t.B) floatTensor(`B_${l}`, [D, 8 * H], t.B);
    if (t.P) floatTensor(`P_${l}`, [D, 3 * H], t.P);
    let [h0, c0] = ['h0', 'c0'];
    if (L > 1) {
      int64Tensor(`rows_${l}_start`, [l * D]);
      int64Tensor(`rows_${l}_end`, [(l + 1) * D]);
      [h0, c0] = [`h0_${l}`, `c0_${l}`];
      node('Slice', ['h0', `rows_${l}_start`, `rows_${l}_end`, 'axis0'], [h0]);
      node('Slice', ['c0', `rows_${l}_start`, `rows_${l}_end`, 'axis0'], [c0]);
    }
    const inputs = [x, `W_${l}`, `R_${l}`, t.B ? `B_${l}` : '', options.lengths ? 'lengths' : '', h0, c0];
    if (t.P) inputs.push(`P_${l}`);
    const [yh, yc] = L > 1 ? [`Y_h_${l}`, `Y_c_${l}`] : ['hn', 'cn'];
    if (l === L - 1 && fromState) {
      // The head reads Y_h; the last layer's Y is not needed.
      node('LSTM', inputs, ['', yh, yc], lstmAttrs);
      hn.push(yh);
      cn.push(yc);
      break;
    }
    node('LSTM', inputs, [`Y_${l}`, yh, yc], lstmAttrs);
    hn.push(yh);
    cn.push(yc);
    // Y [T, D, B, H] -> [T, B, D*H]
    const out = l === L - 1 && !c.batchFirst && mode === 'sequence' ? stackOut : `out_${l}`;
    if (D === 1) {
      node('Squeeze', opset >= 13 ? [`Y_${l}`, 'axis1'] : [`Y_${l}`], [out], opset >= 13 ? [] : [ints('axes', [1])]);
    } else {
      node('Transpose', [`Y_${l}`], [`Y_${l}_tbdh`], [ints('perm', [0, 2, 1, 3])]);
      node('Reshape', [`Y_${l}_tbdh`, 'merge_directions'], [out]);
    }
    x = out;
  }
  if (fromState) {
    // Y_h [D, B, H] -> [B, D*H]: both directions' final states side by side
    int64Tensor('merge_final', [0, -1]);
    node('Transpose', [hn[L - 1]], ['final_bdh'], [ints('perm', [1, 0, 2])]);
    node('Reshape', ['final_bdh', 'merge_final'], [stackOut]);
  } else if (mode === 'last') {
    // the output's last step, as torch exports out[:, -1] (out[-1] time-major): a Gather of
    // index -1 (a scalar, so the time axis goes) -> [B, D*H]
    initializer.push({ name: 'last_step', dims: [], dataType: INT64, rawData: new Uint8Array(BigInt64Array.of(-1n).buffer) });
    if (c.batchFirst) node('Transpose', [x], ['lstm_output_bf'], [ints('perm', [1, 0, 2])]);
    node('Gather', [c.batchFirst ? 'lstm_output_bf' : x, 'last_step'], [stackOut], [int('axis', c.batchFirst ? 1 : 0)]);
  } else if (c.batchFirst) {
    node('Transpose', [x], [stackOut], [ints('perm', [1, 0, 2])]);
  }
  if (head) {
    // output = stack output · Wᵀ (+ b): MatMul broadcasts over the leading axes.
    const F = head.inFeatures;
    const O = head.outFeatures;
    floatTensor('head_weight_t', [F, O], transpose2d(head.weight, O, F));
    node('MatMul', [stackOut, 'head_weight_t'], [head.bias ? 'head_matmul' : 'output']);
    if (head.bias) {
      floatTensor('head_bias', [O], head.bias);
      node('Add', ['head_matmul', 'head_bias'], ['output']);
    }
  }
  if (L > 1) {
    node('Concat', hn, ['hn'], [int('axis', 0)]);
    node('Concat', cn, ['cn'], [int('axis', 0)]);
  }

  const dim = (d: number | string): OnnxNs.TensorShapeProto.IDimension => (typeof d === 'number' ? { dimValue: d } : { dimParam: d });
  const value = (name: string, elemType: number, dims: (number | string)[]): OnnxNs.IValueInfoProto => ({
    name,
    type: { tensorType: { elemType, shape: { dim: dims.map(dim) } } },
  });
  const Hout = c.outSize;
  const outWidth = head ? head.outFeatures : D * Hout;
  const graphInputs = [
    value('input', FLOAT, c.batchFirst ? ['batch', 'seq', c.inputSize] : ['seq', 'batch', c.inputSize]),
    value('h0', FLOAT, [L * D, 'batch', Hout]),
    value('c0', FLOAT, [L * D, 'batch', H]),
  ];
  if (options.lengths) graphInputs.push(value('lengths', INT32, ['batch']));
  const proto = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'lstm-native',
    opsetImport: [{ domain: '', version: opset }],
    graph: {
      name: 'lstm',
      node: nodes,
      initializer,
      input: graphInputs,
      output: [
        value('output', FLOAT, mode !== 'sequence' ? ['batch', outWidth] : c.batchFirst ? ['batch', 'seq', outWidth] : ['seq', 'batch', outWidth]),
        value('hn', FLOAT, [L * D, 'batch', Hout]),
        value('cn', FLOAT, [L * D, 'batch', H]),
      ],
    },
  });
  return onnx.ModelProto.encode(proto).finish();
}
