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

// Gate matrices W [4H, k] (row g*H + j: gate g of unit j) packed with the gates of
// each block of 16 units side by side: column (j/16)*64 + g*16 + j%16, so a range of
// unit blocks is a range of whole panels (4 per block) and one thread can own both
// the GEMM columns and the cell update of its units. n = 64 * ceil(H/16), zero padded.
void pack_gate_matrix(const float* w, int H, int k, PackedMatrix* out);

// Column of gate g (0..3) of unit j in the gate-interleaved layout.
inline int gate_column(int g, int j) { return (j / kPanel) * 4 * kPanel + g * kPanel + j % kPanel; }

// C[m * ldc + j] += sum_kk A[m * lda + kk] * W[j, kk] for m < M, j < W.n.
void gemm_nt(Isa isa, int M, const float* A, std::ptrdiff_t lda, const PackedMatrix& W, float* C, std::ptrdiff_t ldc);

// The same restricted to the columns of panels [p0, p1). Each output element is
// computed the same way whatever the panel range, so splitting panels across threads
// gives bitwise the same result as one thread.
void gemm_nt_panels(Isa isa, int M, const float* A, std::ptrdiff_t lda, const PackedMatrix& W, int p0, int p1, float* C,
                    std::ptrdiff_t ldc);

}  // namespace lstm
