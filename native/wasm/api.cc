// The WebAssembly engine's C ABI: the kernels of native/kernels behind plain functions
// on linear-memory pointers. No WASI, no JS glue beyond lib/wasm/module.ts: the module
// imports nothing and exports its memory, malloc/free and the calls below. All shapes
// were checked by the TypeScript facade; a failed allocation traps (the caller turns
// the trap into an LstmError), it never returns a half-built object.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

#include "../kernels/gemm.h"
#include "../kernels/isa.h"
#include "../kernels/layer.h"
#include "../kernels/train_cell.h"

#define LSTM_EXPORT(name) extern "C" __attribute__((export_name(#name), visibility("default")))

// operator new without libc++abi's (which would pull in stdio and WASI imports to
// print a message before aborting): out of memory traps.
void* operator new(std::size_t n) {
  void* p = std::malloc(n == 0 ? 1 : n);
  if (p == nullptr) __builtin_trap();
  return p;
}
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
// The aligned forms (the layers' cache-line aligned scratch buffers).
void* operator new(std::size_t n, std::align_val_t align) {
  const std::size_t a = static_cast<std::size_t>(align);
  if (n > SIZE_MAX - a) __builtin_trap();
  void* p = std::aligned_alloc(a, n == 0 ? a : (n + a - 1) / a * a);  // a multiple of the alignment
  if (p == nullptr) __builtin_trap();
  return p;
}
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace {

// Bumped with any change to the calling convention below (checked by lib/wasm/module.ts).
constexpr int kWasmAbi = 3;

lstm::Isa isa_of(int code) { return code == static_cast<int>(lstm::Isa::kScalar) ? lstm::Isa::kScalar : lstm::best_isa(); }

lstm::Activation activation(const int32_t* kinds, const float* params, int i) {
  return lstm::Activation{kinds[i], params[2 * i], params[2 * i + 1]};
}

// Scratch of streaming steps, kept between calls (a step allocates nothing once warm);
// released by lstm_trim().
lstm::Workspace* step_workspace() {
  static lstm::Workspace* ws = new lstm::Workspace();
  return ws;
}

std::vector<const lstm::Layer*> stack_of(const lstm::Layer* const* layers, int n) {
  return std::vector<const lstm::Layer*>(layers, layers + n);
}

}  // namespace

LSTM_EXPORT(lstm_abi) int lstm_abi() { return kWasmAbi; }

// The ISA kernels run on for a requested code (0: scalar, anything else: the best).
LSTM_EXPORT(lstm_isa) int lstm_isa(int requested) { return static_cast<int>(isa_of(requested)); }

LSTM_EXPORT(lstm_malloc) void* lstm_malloc(std::size_t n) { return std::malloc(n); }
LSTM_EXPORT(lstm_free) void lstm_free(void* p) { std::free(p); }

// ints: inputSize, hiddenSize, projSize, numDirections, reverse, bias, peephole,
//       coupled, gate kind, cell kind, hidden kind, then whether the reverse direction
//       has activations of its own and their three kinds
// floats: clip, alpha and beta of the gate, cell and hidden activations, then of the
//       reverse direction's
// ptrs: per direction wIh, wHh, bIh, bHh, wHr, wCi, wCf, wCo, wCh (0 where absent)
LSTM_EXPORT(lstm_layer_new) lstm::Layer* lstm_layer_new(const int32_t* ints, const float* floats, const uint32_t* ptrs) {
  lstm::LayerDesc d;
  d.input_size = ints[0];
  d.hidden_size = ints[1];
  d.proj_size = ints[2];
  d.num_directions = ints[3];
  d.reverse = ints[4] != 0;
  d.bias = ints[5] != 0;
  d.peephole = ints[6];
  d.coupled = ints[7] != 0;
  d.gate = activation(ints + 8, floats + 1, 0);
  d.cell = activation(ints + 8, floats + 1, 1);
  d.hidden = activation(ints + 8, floats + 1, 2);
  d.reverse_acts = ints[11] != 0 && d.num_directions == 2;
  d.gate_r = activation(ints + 12, floats + 7, 0);
  d.cell_r = activation(ints + 12, floats + 7, 1);
  d.hidden_r = activation(ints + 12, floats + 7, 2);
  d.clip = floats[0];
  lstm::DirectionWeightsView views[2];
  for (int i = 0; i < d.num_directions; ++i) {
    const uint32_t* p = ptrs + 9 * i;
    const auto at = [](uint32_t v) { return reinterpret_cast<const float*>(static_cast<uintptr_t>(v)); };
    views[i].w_ih = at(p[0]);
    views[i].w_hh = at(p[1]);
    views[i].b_ih = at(p[2]);
    views[i].b_hh = at(p[3]);
    views[i].w_hr = at(p[4]);
    views[i].w_ci = at(p[5]);
    views[i].w_cf = at(p[6]);
    views[i].w_co = at(p[7]);
    views[i].w_ch = at(p[8]);
  }
  return new lstm::Layer(d, views);
}

LSTM_EXPORT(lstm_layer_free) void lstm_layer_free(lstm::Layer* layer) { delete layer; }

LSTM_EXPORT(lstm_layer_bytes) double lstm_layer_bytes(const lstm::Layer* layer) {
  return static_cast<double>(layer->packed_bytes());
}

// The whole stack over T steps: y [T, B, D*Hout] of the last layer, hn/cn of every layer.
LSTM_EXPORT(lstm_forward)
void lstm_forward(const lstm::Layer* const* layers, int n, int isa, const float* x, int T, int B, const float* h0,
                  const float* c0, const int32_t* lengths, float* y, float* hn, float* cn) {
  lstm::Workspace ws;  // freed on return: a long sequence's scratch goes back to the heap
  lstm::forward_stack(stack_of(layers, n), isa_of(isa), lstm::Threading{},
                      lstm::StackRun::forward(x, T, B, h0, c0, lengths, y, hn, cn), &ws);
}

// One step of a unidirectional stack, h [L, B, Hout] and c [L, B, H] updated in place.
LSTM_EXPORT(lstm_step)
void lstm_step(const lstm::Layer* const* layers, int n, int isa, const float* x, int B, float* h, float* c, float* out) {
  lstm::forward_stack(stack_of(layers, n), isa_of(isa), lstm::Threading{}, lstm::StackRun::step(x, B, h, c, out),
                      step_workspace());
}

// Give the streaming scratch back to the heap (the engine calls this when its last model goes).
LSTM_EXPORT(lstm_trim) void lstm_trim() { *step_workspace() = lstm::Workspace(); }

LSTM_EXPORT(lstm_packed_new) lstm::PackedMatrix* lstm_packed_new() { return new lstm::PackedMatrix(); }

LSTM_EXPORT(lstm_packed_set) void lstm_packed_set(lstm::PackedMatrix* p, const float* w, int n, int k) {
  lstm::pack_matrix(w, n, k, p);
}

// The same matrix from its transpose wt [k, n].
LSTM_EXPORT(lstm_packed_set_kn) void lstm_packed_set_kn(lstm::PackedMatrix* p, const float* wt, int n, int k) {
  lstm::pack_matrix_kn(wt, k, n, p);
}

LSTM_EXPORT(lstm_packed_free) void lstm_packed_free(lstm::PackedMatrix* p) { delete p; }

// c [M, n] (+)= a [M, k] * W^T
LSTM_EXPORT(lstm_gemm_nt)
void lstm_gemm_nt(int isa, int M, const float* a, const lstm::PackedMatrix* w, float* c, int accumulate) {
  if (!accumulate) std::fill_n(c, static_cast<std::size_t>(M) * w->n, 0.f);
  lstm::gemm_nt(isa_of(isa), M, a, w->k, *w, c, w->n);
}

// c [M, n] (+)= at [k, M]^T * W^T
LSTM_EXPORT(lstm_gemm_tn)
void lstm_gemm_tn(int isa, int M, const float* at, const lstm::PackedMatrix* w, float* c, int accumulate) {
  if (!accumulate) std::fill_n(c, static_cast<std::size_t>(M) * w->n, 0.f);
  std::vector<float> scratch(lstm::gemm_scratch_floats());
  lstm::gemm_tn_rows(isa_of(isa), at, M, *w, 0, M, c, w->n, scratch.data());
}
