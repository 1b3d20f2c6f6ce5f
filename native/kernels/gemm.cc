#include "gemm.h"

#include <algorithm>

#include "microkernels.h"

namespace lstm {

void pack_matrix(const float* w, int n, int k, PackedMatrix* out) {
  const int panels = (n + kPanel - 1) / kPanel;
  out->n = n;
  out->k = k;
  out->data.assign(static_cast<std::size_t>(panels) * k * kPanel, 0.f);
  for (int row = 0; row < n; ++row) {
    float* dst = out->data.data() + static_cast<std::size_t>(row / kPanel) * k * kPanel + row % kPanel;
    const float* src = w + static_cast<std::size_t>(row) * k;
    for (int c = 0; c < k; ++c) dst[static_cast<std::size_t>(c) * kPanel] = src[c];
  }
}

namespace {

// Rows of A kept hot per block and the depth of one pass: an MC x KC block of A
// (72 KiB) stays in L2 while every panel of W streams past it.
constexpr int kMC = 72;
constexpr int kKC = 256;

void gemm_blocked(const MicroKernel& uk, int M, const float* A, std::ptrdiff_t lda, const PackedMatrix& W, float* C,
                  std::ptrdiff_t ldc) {
  const int K = W.k;
  const int panels = (W.n + kPanel - 1) / kPanel;
  for (int k0 = 0; k0 < K; k0 += kKC) {
    const int kc = std::min(kKC, K - k0);
    for (int m0 = 0; m0 < M; m0 += kMC) {
      const int mc = std::min(kMC, M - m0);
      for (int p = 0; p < panels; ++p) {
        const int nr = std::min(kPanel, W.n - p * kPanel);
        const float* bp = W.data.data() + (static_cast<std::size_t>(p) * K + k0) * kPanel;
        for (int m = m0; m < m0 + mc; m += uk.mr) {
          const int mr = std::min(uk.mr, m0 + mc - m);
          uk.run(mr, kc, A + m * lda + k0, lda, bp, C + m * ldc + p * kPanel, ldc, nr);
        }
      }
    }
  }
}

}  // namespace

void gemm_nt(Isa isa, int M, const float* A, std::ptrdiff_t lda, const PackedMatrix& W, float* C, std::ptrdiff_t ldc) {
  if (M <= 0 || W.n <= 0 || W.k <= 0) return;
  gemm_blocked(microkernel_for(isa), M, A, lda, W, C, ldc);
}

}  // namespace lstm
