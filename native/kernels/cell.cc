#include "cell.h"

#include <algorithm>

#include "gemm.h"
#include "vec.h"

namespace lstm {

namespace {

inline float clampf(float v, float clip) { return clip > 0.f ? std::min(std::max(v, -clip), clip) : v; }

// The oracle: one element at a time, any activation. g is one row of gates.
void cell_scalar_range(const CellSpec& s, int j0, int j1, const float* g, const float* cp, float* co, float* ro) {
  for (int j = j0; j < j1; ++j) {
    const float c_prev = cp[j];
    const float* gj = g + gate_column(0, j);
    float zi = gj[0];
    float zf = gj[kPanel];
    float zg = gj[2 * kPanel];
    float zo = gj[3 * kPanel];
    if (s.wci) {
      zi += s.wci[j] * c_prev;
      zf += s.wcf[j] * c_prev;
    }
    const float i = activate(s.gate, clampf(zi, s.clip));
    const float f = s.coupled ? 1.f - i : activate(s.gate, clampf(zf, s.clip));
    const float c = f * c_prev + i * activate(s.cell, clampf(zg, s.clip));
    if (s.wco) zo += s.wco[j] * c;
    co[j] = c;
    ro[j] = activate(s.gate, clampf(zo, s.clip)) * activate(s.out, c);
  }
}

}  // namespace

// The vector kernels, one instantiation per ISA of cell_kernels.inc.
#if defined(__x86_64__)
namespace avx2_kernels {
using S = vec::Avx2;
// Four vectors (two panels) in lock step: in-process A/B of the cell alone, same bits,
// B=32 H=256 +9-16%, B=64 H=512 +17%, B=1 H=256 +12%, with peepholes and clip +8-13%
// (two vectors: +8-9%).
constexpr int kLockstep = 4;
#define LSTM_VEC_FN __attribute__((target("avx2,fma")))
#include "cell_kernels.inc"
#undef LSTM_VEC_FN
}  // namespace avx2_kernels

// Sixteen lanes: one vector per gate of a 16-unit block. Two vectors in lock step. (Four
// ran the cell alone 1.10-1.14x faster, but S3 at two threads 4-6% slower; three and eight
// beat four there too. Not understood, so two, as measured everywhere else.)
// GCC 12 reports its own AVX-512 headers' deliberately undefined pass-through operands as
// uninitialized once the activations are inlined here (GCC bug 105593): about 80 warnings
// in every build from source, silenced for this block. The same code instantiated for AVX2
// above keeps the warnings.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
namespace avx512_kernels {
using S = vec::Avx512;
constexpr int kLockstep = 2;
#define LSTM_VEC_FN __attribute__((target("avx512f,avx2,fma")))
#include "cell_kernels.inc"
#undef LSTM_VEC_FN

// The full blocks at sixteen lanes, a partial last block through the AVX2 cell (whose eight
// lanes reach further into it than sixteen): every unit then gets the operations it gets on
// AVX2, lane for lane, so the two ISAs give the same bits.
__attribute__((target("avx512f,avx2,fma"))) void cell_blocks(const CellSpec& s, int B, const float* gates,
                                                            std::ptrdiff_t ldg, int block0, int block1,
                                                            const float* c_prev, float* c_out, float* r_out,
                                                            std::ptrdiff_t ldr) {
  const int full = s.hidden / kPanel;
  const int mid = std::min(block1, std::max(block0, full));
  if (block0 < mid) cell(s, B, gates, ldg, block0, mid, c_prev, c_out, r_out, ldr);
  if (mid < block1) avx2_kernels::cell(s, B, gates, ldg, mid, block1, c_prev, c_out, r_out, ldr);
}
}  // namespace avx512_kernels
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif
#if defined(__aarch64__)
namespace neon_kernels {
using S = vec::Neon;
constexpr int kLockstep = 1;  // not measured on an arm64 machine: the loop as it was
#define LSTM_VEC_FN
#include "cell_kernels.inc"
#undef LSTM_VEC_FN
}  // namespace neon_kernels
#endif
#if defined(__wasm_simd128__)
namespace simd128_kernels {
using S = vec::Simd128;
constexpr int kLockstep = 1;  // four in lock step measured no gain in Node 20 (S2 0.99x, B=1 0.99x)
#define LSTM_VEC_FN
#include "cell_kernels.inc"
#undef LSTM_VEC_FN
}  // namespace simd128_kernels
#endif

namespace {

bool standard_acts(const CellSpec& s) {
  return s.gate.kind == kSigmoid && s.cell.kind == kTanh && s.out.kind == kTanh;
}

// The vectorised kernels of an ISA, or nulls where the oracle runs. (AVX-512's activations
// over a flat array are the AVX2 ones: 8 lanes cover n % 16 remainders that 16 would leave
// to the oracle; training's tapes use them.)
struct VecKernels {
  void (*cell)(const CellSpec&, int, const float*, std::ptrdiff_t, int, int, const float*, float*, float*,
               std::ptrdiff_t) = nullptr;
  void (*map)(bool, const float*, float*, int) = nullptr;
};

VecKernels vec_kernels(Isa isa) {
#if defined(__x86_64__)
  if (isa == Isa::kAvx512) return {avx512_kernels::cell_blocks, avx2_kernels::map};
  if (isa == Isa::kAvx2) return {avx2_kernels::cell, avx2_kernels::map};
#elif defined(__aarch64__)
  if (isa == Isa::kNeon) return {neon_kernels::cell, neon_kernels::map};
#elif defined(__wasm_simd128__)
  if (isa == Isa::kSimd128) return {simd128_kernels::cell, simd128_kernels::map};
#endif
  (void)isa;
  return {};
}

}  // namespace

void cell_forward(Isa isa, const CellSpec& spec, int B, const float* gates, std::ptrdiff_t ldg, int block0, int block1,
                  const float* c_prev, float* c_out, float* r_out, std::ptrdiff_t ldr) {
  const auto vectorised = standard_acts(spec) ? vec_kernels(isa).cell : nullptr;
  if (vectorised != nullptr) {
    vectorised(spec, B, gates, ldg, block0, block1, c_prev, c_out, r_out, ldr);
    return;
  }
  const int H = spec.hidden;
  const int j0 = block0 * kPanel;
  const int j1 = std::min(block1 * kPanel, H);
  for (int b = 0; b < B; ++b) {
    cell_scalar_range(spec, j0, j1, gates + b * ldg, c_prev + static_cast<std::ptrdiff_t>(b) * H,
                      c_out + static_cast<std::ptrdiff_t>(b) * H, r_out + b * ldr);
  }
}

void sigmoid_vec(Isa isa, const float* x, float* y, int n) {
  if (const auto f = vec_kernels(isa).map) return f(true, x, y, n);
  const Activation a{kSigmoid, 0.f, 0.f};
  for (int j = 0; j < n; ++j) y[j] = activate(a, x[j]);
}

void tanh_vec(Isa isa, const float* x, float* y, int n) {
  if (const auto f = vec_kernels(isa).map) return f(false, x, y, n);
  const Activation a{kTanh, 0.f, 0.f};
  for (int j = 0; j < n; ++j) y[j] = activate(a, x[j]);
}

}  // namespace lstm
