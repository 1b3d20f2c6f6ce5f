// Micro-kernels: the portable oracle here, the vector ones from gemm_kernels.inc. ISA
// code sits behind target attributes, so the file compiles for baseline x86-64 (or
// arm64, or wasm32) and one binary carries every path.
#include "microkernels.h"

#include "gemm.h"
#include "vec.h"

namespace lstm {

namespace {

// Portable kernel: 4 x 16 accumulators the compiler keeps in vector registers
// (SSE2 on x86-64, NEON on arm64).
template <int MR, bool kT>
inline void ukernel_scalar(int kc, const float* a, std::ptrdiff_t lda, const float* b, std::ptrdiff_t ks, float* c,
                           std::ptrdiff_t ldc, int nr) {
  float acc[MR][kPanel] = {};
  for (int k = 0; k < kc; ++k) {
    const float* bk = b + k * ks;
    for (int i = 0; i < MR; ++i) {
      const float av = kT ? a[static_cast<std::ptrdiff_t>(k) * lda + i] : a[i * lda + k];
      for (int j = 0; j < kPanel; ++j) acc[i][j] += av * bk[j];
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < nr; ++j) c[i * ldc + j] += acc[i][j];
}

// mr rows (1..4) through the scalar kernel of exactly that many rows.
template <bool kT>
void scalar_rows(int mr, int kc, const float* a, std::ptrdiff_t lda, const float* panel, std::ptrdiff_t ks, float* c,
                 std::ptrdiff_t ldc, int nr) {
  switch (mr) {
    case 4: ukernel_scalar<4, kT>(kc, a, lda, panel, ks, c, ldc, nr); break;
    case 3: ukernel_scalar<3, kT>(kc, a, lda, panel, ks, c, ldc, nr); break;
    case 2: ukernel_scalar<2, kT>(kc, a, lda, panel, ks, c, ldc, nr); break;
    default: ukernel_scalar<1, kT>(kc, a, lda, panel, ks, c, ldc, nr); break;
  }
}

}  // namespace

void gemm_ukernel_f32__scalar(int mr, int kc, const float* a, std::ptrdiff_t lda, const float* panel, std::ptrdiff_t ks,
                              float* c, std::ptrdiff_t ldc, int nr) {
  scalar_rows<false>(mr, kc, a, lda, panel, ks, c, ldc, nr);
}

void gemm_ukernel_f32__scalar_t(int mr, int kc, const float* a, std::ptrdiff_t lda, const float* panel, std::ptrdiff_t ks,
                                float* c, std::ptrdiff_t ldc, int nr) {
  scalar_rows<true>(mr, kc, a, lda, panel, ks, c, ldc, nr);
}

// Loop pragmas for the kernels: full unrolling of the loops over accumulators (their
// indices must be constants for the accumulators to live in registers).
#if defined(__clang__)
#define LSTM_UNROLL_FULL _Pragma("clang loop unroll(full)")
#else
#define LSTM_UNROLL_FULL _Pragma("GCC unroll 16")
#endif
#if defined(__clang__)
#define LSTM_UNROLL_2 _Pragma("clang loop unroll_count(2)")
#else
#define LSTM_UNROLL_2 _Pragma("GCC unroll 2")
#endif

// One instantiation of gemm_kernels.inc per ISA.
#if defined(__x86_64__)
// 6 x 16 in 12 ymm accumulators: 2 panel loads and 6 broadcasts per k. The micro-kernel's
// k loop is unrolled twice (one pointer bump and branch per two k). In-process A/B, same
// bits, two runs of 21 pairs: 32x256x1024 (a recurrent product of S2) +6% and +8%,
// 64x512x1024 +15% and +9%, 128x256x1024 -1% and +15%; the large input projections and
// 64x512x2048 within -1..+4%; the 4-row kernel alone +9-32%. The one-row GEMV streams
// from L3 and gained nothing (S1, S4: 0.99x), so its loop stays as it is.
namespace avx2_kernels {
using S = vec::Avx2;
constexpr int kMR = 6;
constexpr int kGemvPanels = 4;  // 8 accumulators
#define LSTM_VEC_FN __attribute__((target("avx2,fma")))
#define LSTM_K_LOOP LSTM_UNROLL_2
#define LSTM_GEMV_K_LOOP
#include "gemm_kernels.inc"
#undef LSTM_K_LOOP
#undef LSTM_GEMV_K_LOOP
#undef LSTM_VEC_FN
}  // namespace avx2_kernels

// 12 x 16 in 12 zmm accumulators: 1 panel load per k.
namespace avx512_kernels {
using S = vec::Avx512;
constexpr int kMR = 12;
constexpr int kGemvPanels = 4;  // 4 accumulators
#define LSTM_VEC_FN __attribute__((target("avx512f,avx2,fma")))
#define LSTM_K_LOOP
#define LSTM_GEMV_K_LOOP
#define LSTM_PAIR_KERNEL 1
#include "gemm_kernels.inc"
#undef LSTM_PAIR_KERNEL
#undef LSTM_K_LOOP
#undef LSTM_GEMV_K_LOOP
#undef LSTM_VEC_FN
}  // namespace avx512_kernels
#endif

#if defined(__aarch64__)
// 32 NEON registers: 6 x 16 in 24 accumulators, 4 panel vectors and a broadcast.
namespace neon_kernels {
using S = vec::Neon;
constexpr int kMR = 6;
constexpr int kGemvPanels = 4;  // 16 accumulators
#define LSTM_VEC_FN
#define LSTM_K_LOOP
#define LSTM_GEMV_K_LOOP
#include "gemm_kernels.inc"
#undef LSTM_K_LOOP
#undef LSTM_GEMV_K_LOOP
#undef LSTM_VEC_FN
}  // namespace neon_kernels
#endif

#if defined(__wasm_simd128__)
// V8 gives wasm 16 x86-64 vector registers: 2 x 16 keeps 8 accumulators, 4 panel vectors
// and a broadcast in them. Measured on S3-sized GEMMs in Node 20, GFLOP/s: 2x16 28,
// 1x16 21, 3x16 18, 4x8 23, 3x8 20, 6x8 19, 7x4 19; the k loop unrolled: 21.
namespace simd128_kernels {
using S = vec::Simd128;
constexpr int kMR = 2;
constexpr int kGemvPanels = 2;  // 8 accumulators, two passes
#define LSTM_VEC_FN
#define LSTM_K_LOOP _Pragma("clang loop unroll(disable)")
#define LSTM_GEMV_K_LOOP LSTM_K_LOOP
#include "gemm_kernels.inc"
#undef LSTM_K_LOOP
#undef LSTM_GEMV_K_LOOP
#undef LSTM_VEC_FN
}  // namespace simd128_kernels
#endif

MicroKernel microkernel_for(Isa isa) {
#if defined(__x86_64__)
  if (isa == Isa::kAvx512) {
    return {avx512_kernels::kMR,   avx512_kernels::gemm,    avx512_kernels::gemm_t,
            avx512_kernels::gemv4, avx512_kernels::gemm2,   avx512_kernels::gemm2_t,
            avx512_kernels::gemm4, avx512_kernels::kQuadRows};
  }
  if (isa == Isa::kAvx2) return {avx2_kernels::kMR, avx2_kernels::gemm, avx2_kernels::gemm_t, avx2_kernels::gemv4};
#elif defined(__aarch64__)
  if (isa == Isa::kNeon) return {neon_kernels::kMR, neon_kernels::gemm, neon_kernels::gemm_t, neon_kernels::gemv4};
#elif defined(__wasm_simd128__)
  if (isa == Isa::kSimd128) return {simd128_kernels::kMR, simd128_kernels::gemm, simd128_kernels::gemm_t, simd128_kernels::gemv4};
#endif
  (void)isa;
  return {4, gemm_ukernel_f32__scalar, gemm_ukernel_f32__scalar_t, nullptr};
}

}  // namespace lstm
