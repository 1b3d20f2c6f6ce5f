// fp32 GEMM against a weight matrix packed once: C[M, N] += A[M, K] * W[N, K]^T.
#pragma once

#include <cstddef>
#include <vector>

#include "isa.h"

namespace lstm {

// Columns per packed panel: two AVX2 vectors or one AVX-512 vector.
constexpr int kPanel = 16;

// W [n, k] (row-major, as PyTorch stores weights) packed into ceil(n/16) panels,
// each [k][16]: the micro-kernels read 16 consecutive columns for every k.
struct PackedMatrix {
  int n = 0;
  int k = 0;
  std::vector<float> data;
  bool empty() const { return n == 0; }
};

void pack_matrix(const float* w, int n, int k, PackedMatrix* out);

// C[m * ldc + j] += sum_kk A[m * lda + kk] * W[j, kk] for m < M, j < W.n.
void gemm_nt(Isa isa, int M, const float* A, std::ptrdiff_t lda, const PackedMatrix& W, float* C, std::ptrdiff_t ldc);

}  // namespace lstm
