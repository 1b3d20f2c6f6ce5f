// GEMM micro-kernels, one per ISA: C[mr x nr] += A[mr x kc] * panel[kc x 16].
#pragma once

#include <cstddef>

#include "isa.h"

namespace lstm {

using MicroKernelFn = void (*)(int mr, int kc, const float* a, std::ptrdiff_t lda, const float* panel, float* c,
                               std::ptrdiff_t ldc, int nr);

// One row of A against four consecutive full panels (64 columns): c[0..64) += a * panels.
using Gemv4Fn = void (*)(int kc, const float* a, const float* panels, std::ptrdiff_t panel_stride, float* c);

// The most rows any kernel takes per call (AVX-512's 12 x 16).
constexpr int kMaxMR = 12;

// Two full panels, the second `stride` floats after the first: c[mr x 32] += a * both.
using MicroKernel2Fn = void (*)(int mr, int kc, const float* a, std::ptrdiff_t lda, const float* panel,
                                std::ptrdiff_t stride, float* c, std::ptrdiff_t ldc);

struct MicroKernel {
  int mr;  // rows of A per call, at most kMaxMR
  MicroKernelFn run;
  MicroKernelFn run_t;  // the same with A k-major: a(i, k) at a[k * lda + i]
  Gemv4Fn gemv4;  // null: use run with mr = 1
  MicroKernel2Fn run2 = nullptr;    // null: run, a panel at a time
  MicroKernel2Fn run2_t = nullptr;  // the same with A k-major
  // Four full panels at once (the second argument's stride apart) for blocks of at most
  // run4_rows rows, A row-major; null: run2 or run.
  MicroKernel2Fn run4 = nullptr;
  int run4_rows = 0;
};

MicroKernel microkernel_for(Isa isa);

void gemm_ukernel_f32__scalar(int mr, int kc, const float* a, std::ptrdiff_t lda, const float* panel, float* c,
                              std::ptrdiff_t ldc, int nr);
void gemm_ukernel_f32__scalar_t(int mr, int kc, const float* a, std::ptrdiff_t lda, const float* panel, float* c,
                                std::ptrdiff_t ldc, int nr);
// The vectorised kernels are instantiations of gemm_kernels.inc, reached through
// microkernel_for (one per ISA: AVX-512, AVX2+FMA, NEON, WebAssembly SIMD128).

}  // namespace lstm
