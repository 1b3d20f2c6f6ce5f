// fp32 GEMM against a weight matrix packed once: C[M, N] += A[M, K] * W[N, K]^T.
#pragma once

#include <cstddef>
#include <vector>

#include "isa.h"

namespace lstm {

// Columns per packed panel: two AVX2 vectors or one AVX-512 vector.
constexpr int kPanel = 16;

// W [n, k] (row-major, as PyTorch stores weights) packed into ceil(n/16) panels of 16
// columns, each panel [k][16] (group 1), or (group 2) in pairs of neighbouring panels
// whose rows lie side by side: a pair holds [k][2][16], so row kk of panel p is 16
// consecutive floats, the same row of the other panel of its pair the next 16 (or the
// previous), and row kk + 1 k_stride(p) floats on (a last panel without a pair is [k][16]).
//
// Pairs are for kernels that read two panels at once: the two-panel kernel then reads one
// sequential stream, and the one-row kernel (four panels: a streaming step) two, where
// separate panels gave them two and four streams 16 KiB apart. C harness, the one-row
// kernel over I=H=256 weights in the engine's alternating order, medians of five,
// separate panels / pairs / groups of four: 1 MiB (S1's recurrent product at one thread)
// 6.35 / 5.59 / 5.49 us, 2 MiB (S4 at one thread) 15.53 / 15.02 / 14.77 us, 2 x 0.5 MiB
// (S4's share of a core at two threads) 5.84 / 5.54 / 5.49 us. Groups of four cost S3's
// products (I=H=512, B=64, W of 4 MiB) 6% at one thread, 10% with the two-panel kernel
// run over both halves of each row in turn; pairs there took 0.97-0.98x the time of
// separate panels, and an S2 layer (B=32) 1.01x, on AVX-512. Where the GEMM has only a
// one-panel kernel, that kernel reads half of every pair's row: S3 on AVX2 took 1.1x as
// long, and the wasm engine's S3 1.08x. So the packer takes the group that suits the
// kernels that will run (packed_group); every kernel computes the same bits from either.
// The panels live in data, or (packed with a destination) in memory the packer was given.
struct PackedMatrix {
  int n = 0;
  int k = 0;
  int group = 1;  // panels per group: 1 or 2
  std::vector<float> data;  // the panels, unless placed
  bool empty() const { return n == 0; }
  const float* panels() const { return placed_ != nullptr ? placed_ : data.data(); }
  float* panels() { return placed_ != nullptr ? placed_ : data.data(); }
  int panel_count() const { return (n + kPanel - 1) / kPanel; }
  // Floats from one row of panel p to its next: a row of every panel of p's group.
  std::ptrdiff_t k_stride(int p) const {
    const int first = p / group * group;
    return static_cast<std::ptrdiff_t>(kPanel) * (panel_count() - first < group ? panel_count() - first : group);
  }
  // For kernels over neighbouring panels (units of two or four that are whole pairs):
  // floats from a panel to the next one, and from a panel to the one two on.
  std::ptrdiff_t next_panel() const { return group == 2 ? kPanel : static_cast<std::ptrdiff_t>(k) * kPanel; }
  std::ptrdiff_t panel_after_next() const { return 2 * static_cast<std::ptrdiff_t>(k) * kPanel; }
  // Row kk of panel p (its 16 columns).
  const float* panel(int p, int kk) const { return panels() + panel_offset(p, kk); }
  float* panel(int p, int kk) { return panels() + panel_offset(p, kk); }
  std::size_t floats() const { return placed_ != nullptr ? placed_floats_ : data.size(); }
  // n x k zeros in data, or over dst (which must hold packed_floats(n, k) zeros and
  // outlive every use of this matrix, such as a layer's PageBlock); panels_per_group: 1 or 2.
  void reset(int rows, int cols, float* dst, int panels_per_group = 1);

 private:
  std::ptrdiff_t panel_offset(int p, int kk) const {
    return static_cast<std::ptrdiff_t>(p / group) * group * k * kPanel + kk * k_stride(p) + (p % group) * kPanel;
  }
  float* placed_ = nullptr;
  std::size_t placed_floats_ = 0;
};

// Floats of an n x k matrix packed: ceil(n/16) panels of k x 16.
inline std::size_t packed_floats(int n, int k) {
  return static_cast<std::size_t>((n + kPanel - 1) / kPanel) * static_cast<std::size_t>(k) * kPanel;
}

// The packers below write into out->data, or with dst into dst (see reset): a layer packs
// its weights straight into its block, with no copy and no second allocation of them.
void pack_matrix(const float* w, int n, int k, PackedMatrix* out, float* dst = nullptr, int group = 1);

// The group that suits the GEMM kernels of this ISA: pairs where there is a two-panel
// kernel (AVX-512), else single panels.
inline int packed_group(Isa isa) { return isa == Isa::kAvx512 ? 2 : 1; }

// The same packed matrix from W given transposed, Wt [k, n] row-major (the layout of a
// weight that multiplies from the other side in backpropagation, or of activations
// [rows, n] in a weight gradient): a row of Wt is a row of every panel, so packing is a
// copy where pack_matrix would need a transpose. The result equals pack_matrix of W.
void pack_matrix_kn(const float* wt, int k, int n, PackedMatrix* out);

// Gate matrices W [4H, k] (row g*H + j: gate g of unit j) packed with the gates of
// each block of 16 units side by side: column (j/16)*64 + g*16 + j%16, so a range of
// unit blocks is a range of whole panels (4 per block) and one thread can own both
// the GEMM columns and the cell update of its units. n = 64 * ceil(H/16), zero padded.
void pack_gate_matrix(const float* w, int H, int k, PackedMatrix* out, float* dst = nullptr, int group = 1);

// Column of gate g (0..3) of unit j in the gate-interleaved layout.
inline int gate_column(int g, int j) { return (j / kPanel) * 4 * kPanel + g * kPanel + j % kPanel; }

// Scratch floats for one packed block of A: gemm_tn_rows needs them, gemm_nt may use them.
std::size_t gemm_scratch_floats();

// Whether gemm_nt_panels would use scratch for M rows against a slice of this many panels
// of W (it packs blocks of A of more than one micro-kernel group, and only against slices
// that stream from L3); when not, the caller can pass null and allocate nothing.
bool gemm_nt_uses_scratch(Isa isa, int M, const PackedMatrix& W, int panels);

// C[m * ldc + j] += sum_kk A[m * lda + kk] * W[j, kk] for m < M, j < W.n. scratch: null,
// or gemm_scratch_floats() floats of this thread's own; with it, blocks of A are packed
// when W streams from L3 (faster, same bits).
void gemm_nt(Isa isa, int M, const float* A, std::ptrdiff_t lda, const PackedMatrix& W, float* C, std::ptrdiff_t ldc,
             float* scratch = nullptr);

// The same restricted to the columns of panels [p0, p1). Each output element is
// computed the same way whatever the panel range (and with or without scratch), so
// splitting panels across threads gives bitwise the same result as one thread.
// backward: the panels in descending order, again with the same results. A matrix that
// streams from L3 on every call leaves the panels it read last in L2; the next call
// finds them there if it starts where this one ended.
void gemm_nt_panels(Isa isa, int M, const float* A, std::ptrdiff_t lda, const PackedMatrix& W, int p0, int p1, float* C,
                    std::ptrdiff_t ldc, float* scratch = nullptr, bool backward = false);

// Tests: -1 (the default) lets the CPU decide whether products against slices that stream
// from L3 prefetch the next panel (only where L2 is under 1 MiB); 0 turns it off, 1 on.
// Results never depend on it.
void set_panel_prefetch(int mode);

// C[m * ldc + j] += sum_kk At[kk * lda + m] * W[j, kk] for m in [m0, m1), j < W.n: the
// left operand given transposed (At [W.k, M]), as a weight gradient dW = dG^T X has it.
// Rows of C are the unit of work, so threads split [0, M) without packing the same
// block of A twice; each element's sum is in k order whatever the split (bitwise the
// same as gemm_nt on the transpose of At). scratch: gemm_scratch_floats() floats.
void gemm_tn_rows(Isa isa, const float* At, std::ptrdiff_t lda, const PackedMatrix& W, int m0, int m1, float* C,
                  std::ptrdiff_t ldc, float* scratch);

}  // namespace lstm
