// Micro-kernels. ISA code sits behind target attributes, so the file compiles for
// baseline x86-64 (or arm64) and one binary carries every path.
#include "microkernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(__wasm_simd128__)
#include <wasm_simd128.h>
#endif

#include "gemm.h"

namespace lstm {

namespace {

// Portable kernel: 4 x 16 accumulators the compiler keeps in vector registers
// (SSE2 on x86-64, NEON on arm64).
template <int MR>
inline void ukernel_scalar(int kc, const float* a, std::ptrdiff_t lda, const float* b, float* c, std::ptrdiff_t ldc,
                           int nr) {
  float acc[MR][kPanel] = {};
  for (int k = 0; k < kc; ++k) {
    const float* bk = b + static_cast<std::ptrdiff_t>(k) * kPanel;
    for (int i = 0; i < MR; ++i) {
      const float av = a[i * lda + k];
      for (int j = 0; j < kPanel; ++j) acc[i][j] += av * bk[j];
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < nr; ++j) c[i * ldc + j] += acc[i][j];
}

}  // namespace

void gemm_ukernel_f32__scalar(int mr, int kc, const float* a, std::ptrdiff_t lda, const float* panel, float* c,
                              std::ptrdiff_t ldc, int nr) {
  switch (mr) {
    case 4: ukernel_scalar<4>(kc, a, lda, panel, c, ldc, nr); break;
    case 3: ukernel_scalar<3>(kc, a, lda, panel, c, ldc, nr); break;
    case 2: ukernel_scalar<2>(kc, a, lda, panel, c, ldc, nr); break;
    default: ukernel_scalar<1>(kc, a, lda, panel, c, ldc, nr); break;
  }
}

#if defined(__x86_64__)

namespace {

// 6 rows x 16 columns: 12 ymm accumulators, 2 panel loads and 6 broadcasts per k.
template <int MR>
__attribute__((target("avx2,fma"), always_inline)) inline void ukernel_avx2(int kc, const float* a, std::ptrdiff_t lda,
                                                                              const float* b, float* c,
                                                                              std::ptrdiff_t ldc, int nr) {
  __m256 lo[MR];
  __m256 hi[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    lo[i] = _mm256_setzero_ps();
    hi[i] = _mm256_setzero_ps();
  }
  for (int k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + k * kPanel);
    const __m256 b1 = _mm256_loadu_ps(b + k * kPanel + 8);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m256 av = _mm256_broadcast_ss(a + i * lda + k);
      lo[i] = _mm256_fmadd_ps(av, b0, lo[i]);
      hi[i] = _mm256_fmadd_ps(av, b1, hi[i]);
    }
  }
  if (nr == kPanel) {
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      float* ci = c + i * ldc;
      _mm256_storeu_ps(ci, _mm256_add_ps(_mm256_loadu_ps(ci), lo[i]));
      _mm256_storeu_ps(ci + 8, _mm256_add_ps(_mm256_loadu_ps(ci + 8), hi[i]));
    }
  } else {
    alignas(32) float tmp[kPanel];
    // Fully unrolled like every loop over the accumulators: a dynamic index would
    // make GCC keep them in memory and spill on every k.
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      _mm256_store_ps(tmp, lo[i]);
      _mm256_store_ps(tmp + 8, hi[i]);
      for (int j = 0; j < nr; ++j) c[i * ldc + j] += tmp[j];
    }
  }
}

// 12 rows x 16 columns: 12 zmm accumulators, 1 panel load per k.
template <int MR>
__attribute__((target("avx512f,avx2,fma"), always_inline)) inline void ukernel_avx512(int kc, const float* a,
                                                                                        std::ptrdiff_t lda,
                                                                                        const float* b, float* c,
                                                                                        std::ptrdiff_t ldc, int nr) {
  __m512 acc[MR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps();
  for (int k = 0; k < kc; ++k) {
    const __m512 bv = _mm512_loadu_ps(b + k * kPanel);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(a[i * lda + k]), bv, acc[i]);
  }
  const __mmask16 mask = static_cast<__mmask16>(nr == kPanel ? 0xFFFF : ((1u << nr) - 1u));
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    float* ci = c + i * ldc;
    _mm512_mask_storeu_ps(ci, mask, _mm512_add_ps(_mm512_maskz_loadu_ps(mask, ci), acc[i]));
  }
}

}  // namespace

__attribute__((target("avx2,fma"))) void gemm_ukernel_f32__avx2(int mr, int kc, const float* a, std::ptrdiff_t lda,
                                                                 const float* panel, float* c, std::ptrdiff_t ldc,
                                                                 int nr) {
  switch (mr) {
    case 6: ukernel_avx2<6>(kc, a, lda, panel, c, ldc, nr); break;
    case 5: ukernel_avx2<5>(kc, a, lda, panel, c, ldc, nr); break;
    case 4: ukernel_avx2<4>(kc, a, lda, panel, c, ldc, nr); break;
    case 3: ukernel_avx2<3>(kc, a, lda, panel, c, ldc, nr); break;
    case 2: ukernel_avx2<2>(kc, a, lda, panel, c, ldc, nr); break;
    default: ukernel_avx2<1>(kc, a, lda, panel, c, ldc, nr); break;
  }
}

__attribute__((target("avx512f,avx2,fma"))) void gemm_ukernel_f32__avx512(int mr, int kc, const float* a,
                                                                           std::ptrdiff_t lda, const float* panel,
                                                                           float* c, std::ptrdiff_t ldc, int nr) {
  switch (mr) {
    case 12: ukernel_avx512<12>(kc, a, lda, panel, c, ldc, nr); break;
    case 11: ukernel_avx512<11>(kc, a, lda, panel, c, ldc, nr); break;
    case 10: ukernel_avx512<10>(kc, a, lda, panel, c, ldc, nr); break;
    case 9: ukernel_avx512<9>(kc, a, lda, panel, c, ldc, nr); break;
    case 8: ukernel_avx512<8>(kc, a, lda, panel, c, ldc, nr); break;
    case 7: ukernel_avx512<7>(kc, a, lda, panel, c, ldc, nr); break;
    case 6: ukernel_avx512<6>(kc, a, lda, panel, c, ldc, nr); break;
    case 5: ukernel_avx512<5>(kc, a, lda, panel, c, ldc, nr); break;
    case 4: ukernel_avx512<4>(kc, a, lda, panel, c, ldc, nr); break;
    case 3: ukernel_avx512<3>(kc, a, lda, panel, c, ldc, nr); break;
    case 2: ukernel_avx512<2>(kc, a, lda, panel, c, ldc, nr); break;
    default: ukernel_avx512<1>(kc, a, lda, panel, c, ldc, nr); break;
  }
}

// Each lane accumulates fma(a[k], w, acc) in k order, exactly as the mr = 1 case of
// the GEMM micro-kernel does, so which of the two computes a panel never changes bits.
__attribute__((target("avx2,fma"))) void gemv4_ukernel_f32__avx2(int kc, const float* a, const float* panels,
                                                                  std::ptrdiff_t stride, float* c) {
  __m256 acc[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_ps();
  for (int k = 0; k < kc; ++k) {
    const __m256 av = _mm256_broadcast_ss(a + k);
    const float* b = panels + k * kPanel;
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      acc[2 * q] = _mm256_fmadd_ps(av, _mm256_loadu_ps(b + q * stride), acc[2 * q]);
      acc[2 * q + 1] = _mm256_fmadd_ps(av, _mm256_loadu_ps(b + q * stride + 8), acc[2 * q + 1]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) _mm256_storeu_ps(c + 8 * i, _mm256_add_ps(_mm256_loadu_ps(c + 8 * i), acc[i]));
}

__attribute__((target("avx512f,avx2,fma"))) void gemv4_ukernel_f32__avx512(int kc, const float* a, const float* panels,
                                                                            std::ptrdiff_t stride, float* c) {
  __m512 acc[4];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) acc[i] = _mm512_setzero_ps();
  for (int k = 0; k < kc; ++k) {
    const __m512 av = _mm512_set1_ps(a[k]);
    const float* b = panels + k * kPanel;
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) acc[q] = _mm512_fmadd_ps(av, _mm512_loadu_ps(b + q * stride), acc[q]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) _mm512_storeu_ps(c + 16 * i, _mm512_add_ps(_mm512_loadu_ps(c + 16 * i), acc[i]));
}

#endif  // __x86_64__

#if defined(__wasm_simd128__)

// 2 rows x 16 columns (8 accumulators, 4 panel vectors, 1 broadcast: no spills in V8's
// 16 x86-64 vector registers). Measured on S3-sized GEMMs in Node 20, GFLOP/s:
// 2x16 28, 1x16 21, 3x16 18, 4x8 23, 3x8 20, 6x8 19, 7x4 19.
#define LSTM_SIMD128_MR 2
#define LSTM_SIMD128_NV 4

namespace {

// WebAssembly SIMD128 (no FMA in the base proposal: a multiply then an add, which
// engines map onto SSE/AVX or NEON). MR rows x 4*NV columns in MR*NV accumulators; a
// panel is covered in 16/(4*NV) passes. x86-64 engines have 16 vector registers, so
// MR*NV + NV + 1 must stay within 16 or the accumulators spill.
template <int MR, int NV>
__attribute__((always_inline)) inline void ukernel_simd128(int kc, const float* a, std::ptrdiff_t lda, const float* b,
                                                           float* c, std::ptrdiff_t ldc, int nr) {
  v128_t acc[MR][NV];
#pragma clang loop unroll(full)
  for (int i = 0; i < MR; ++i)
#pragma clang loop unroll(full)
    for (int q = 0; q < NV; ++q) acc[i][q] = wasm_f32x4_splat(0.f);
// Not unrolled: V8 allocates registers better for the plain loop (measured: 28 vs 21 GFLOP/s).
#pragma clang loop unroll(disable)
  for (int k = 0; k < kc; ++k) {
    const float* bk = b + k * kPanel;
    v128_t bv[NV];
#pragma clang loop unroll(full)
    for (int q = 0; q < NV; ++q) bv[q] = wasm_v128_load(bk + 4 * q);
#pragma clang loop unroll(full)
    for (int i = 0; i < MR; ++i) {
      const v128_t av = wasm_v128_load32_splat(a + i * lda + k);
#pragma clang loop unroll(full)
      for (int q = 0; q < NV; ++q) acc[i][q] = wasm_f32x4_add(acc[i][q], wasm_f32x4_mul(av, bv[q]));
    }
  }
  if (nr >= 4 * NV) {
#pragma clang loop unroll(full)
    for (int i = 0; i < MR; ++i) {
      float* ci = c + i * ldc;
#pragma clang loop unroll(full)
      for (int q = 0; q < NV; ++q) wasm_v128_store(ci + 4 * q, wasm_f32x4_add(wasm_v128_load(ci + 4 * q), acc[i][q]));
    }
  } else {
    alignas(16) float tmp[4 * NV];
    for (int i = 0; i < MR; ++i) {
#pragma clang loop unroll(full)
      for (int q = 0; q < NV; ++q) wasm_v128_store(tmp + 4 * q, acc[i][q]);
      for (int j = 0; j < nr; ++j) c[i * ldc + j] += tmp[j];
    }
  }
}

template <int MR>
inline void ukernel_simd128_panel(int kc, const float* a, std::ptrdiff_t lda, const float* b, float* c,
                                  std::ptrdiff_t ldc, int nr) {
  constexpr int kCols = 4 * LSTM_SIMD128_NV;
  for (int j = 0; j < nr; j += kCols) {
    ukernel_simd128<MR, LSTM_SIMD128_NV>(kc, a, lda, b + j, c + j, ldc, nr - j);
  }
}

}  // namespace

void gemm_ukernel_f32__simd128(int mr, int kc, const float* a, std::ptrdiff_t lda, const float* panel, float* c,
                               std::ptrdiff_t ldc, int nr) {
  static_assert(LSTM_SIMD128_MR == 2, "the switch below covers mr = 1..2");
  switch (mr) {
    case 2: ukernel_simd128_panel<2>(kc, a, lda, panel, c, ldc, nr); break;
    default: ukernel_simd128_panel<1>(kc, a, lda, panel, c, ldc, nr); break;
  }
}

// Same per-lane order as the mr = 1 micro-kernel (mul, then add into the accumulator).
// Two panels per pass: 8 accumulators, like the GEMM kernel, so nothing spills.
void gemv4_ukernel_f32__simd128(int kc, const float* a, const float* panels, std::ptrdiff_t stride, float* c) {
  for (int half = 0; half < 2; ++half) {
    const float* p = panels + 2 * half * stride;
    float* ch = c + 2 * half * kPanel;
    v128_t acc[8];
#pragma clang loop unroll(full)
    for (int i = 0; i < 8; ++i) acc[i] = wasm_f32x4_splat(0.f);
#pragma clang loop unroll(disable)
    for (int k = 0; k < kc; ++k) {
      const v128_t av = wasm_v128_load32_splat(a + k);
      const float* b = p + k * kPanel;
#pragma clang loop unroll(full)
      for (int q = 0; q < 8; ++q) {
        acc[q] = wasm_f32x4_add(acc[q], wasm_f32x4_mul(av, wasm_v128_load(b + (q / 4) * stride + 4 * (q % 4))));
      }
    }
#pragma clang loop unroll(full)
    for (int i = 0; i < 8; ++i) wasm_v128_store(ch + 4 * i, wasm_f32x4_add(wasm_v128_load(ch + 4 * i), acc[i]));
  }
}

#endif  // __wasm_simd128__

MicroKernel microkernel_for(Isa isa) {
#if defined(__x86_64__)
  if (isa == Isa::kAvx512) return {12, gemm_ukernel_f32__avx512, gemv4_ukernel_f32__avx512};
  if (isa == Isa::kAvx2) return {6, gemm_ukernel_f32__avx2, gemv4_ukernel_f32__avx2};
#elif defined(__wasm_simd128__)
  if (isa == Isa::kSimd128) return {LSTM_SIMD128_MR, gemm_ukernel_f32__simd128, gemv4_ukernel_f32__simd128};
#else
  (void)isa;
#endif
  return {4, gemm_ukernel_f32__scalar, nullptr};
}

}  // namespace lstm
