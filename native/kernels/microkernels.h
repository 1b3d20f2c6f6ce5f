// GEMM micro-kernels, one per ISA: C[mr x nr] += A[mr x kc] * panel[kc x 16], the rows
// of a panel ks floats apart (gemm.h's PackedMatrix::k_stride).
#pragma once

#include <cstddef>

#include "gemm.h"
#include "isa.h"

namespace lstm {

using MicroKernelFn = void (*)(int mr, int kc, const float* a, std::ptrdiff_t lda, const float* panel, std::ptrdiff_t ks,
                               float* c, std::ptrdiff_t ldc, int nr);

// Panel q (0..3) of a unit of neighbouring panels that are whole groups of a PackedMatrix
// (gemm.h), from the unit's first: next = next_panel(), after_next = panel_after_next().
inline std::ptrdiff_t neighbour_offset(int q, std::ptrdiff_t next, std::ptrdiff_t after_next) {
  return q / 2 * after_next + q % 2 * next;
}

// One row of A against four full neighbouring panels (64 columns) as neighbour_offset
// places them, rows ks apart: c[0..64) += a * panels.
using Gemv4Fn = void (*)(int kc, const float* a, const float* panels, std::ptrdiff_t ks, std::ptrdiff_t next,
                         std::ptrdiff_t after_next, float* c);

// The most rows any kernel takes per call (AVX-512's 12 x 16).
constexpr int kMaxMR = 12;

// Two (or four) full neighbouring panels, placed as Gemv4Fn's: c[mr x 32 (64)] += a * them.
using MicroKernel2Fn = void (*)(int mr, int kc, const float* a, std::ptrdiff_t lda, const float* panel,
                                std::ptrdiff_t ks, std::ptrdiff_t next, std::ptrdiff_t after_next, float* c,
                                std::ptrdiff_t ldc);

struct MicroKernel {
  int mr;  // rows of A per call, at most kMaxMR
  MicroKernelFn run;
  MicroKernelFn run_t;  // the same with A k-major: a(i, k) at a[k * lda + i]
  Gemv4Fn gemv4;  // null: use run with mr = 1
  MicroKernel2Fn run2 = nullptr;    // null: run, a panel at a time
  MicroKernel2Fn run2_t = nullptr;  // the same with A k-major
  // Four full panels at once for blocks of at most run4_rows rows, A row-major; null: run2
  // or run.
  MicroKernel2Fn run4 = nullptr;
  int run4_rows = 0;
};

MicroKernel microkernel_for(Isa isa);

void gemm_ukernel_f32__scalar(int mr, int kc, const float* a, std::ptrdiff_t lda, const float* panel, std::ptrdiff_t ks,
                              float* c, std::ptrdiff_t ldc, int nr);
void gemm_ukernel_f32__scalar_t(int mr, int kc, const float* a, std::ptrdiff_t lda, const float* panel, std::ptrdiff_t ks,
                                float* c, std::ptrdiff_t ldc, int nr);
// The vectorised kernels are instantiations of gemm_kernels.inc, reached through
// microkernel_for (one per ISA: AVX-512, AVX2+FMA, NEON, WebAssembly SIMD128).

}  // namespace lstm
