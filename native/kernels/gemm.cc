#include "gemm.h"

#include <algorithm>
#include <atomic>
#if defined(__SSE2__)
#include <xmmintrin.h>
#endif
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "microkernels.h"

namespace lstm {

namespace {

// Row src [k] of W as column col of the packed matrix.
void put_column(PackedMatrix* out, int col, const float* src) {
  float* dst = out->panel(col / kPanel, 0) + col % kPanel;
  const std::ptrdiff_t ks = out->k_stride(col / kPanel);
  for (int c = 0; c < out->k; ++c) dst[c * ks] = src[c];
}

}  // namespace

void PackedMatrix::reset(int rows, int cols, float* dst, int panels_per_group) {
  *this = PackedMatrix();
  n = rows;
  k = cols;
  group = panels_per_group == 2 ? 2 : 1;
  if (dst != nullptr) {
    placed_ = dst;
    placed_floats_ = packed_floats(rows, cols);
  } else {
    data.assign(packed_floats(rows, cols), 0.f);
  }
}

void pack_matrix(const float* w, int n, int k, PackedMatrix* out, float* dst, int group) {
  out->reset(n, k, dst, group);
  for (int row = 0; row < n; ++row) put_column(out, row, w + static_cast<std::size_t>(row) * k);
}

void pack_matrix_kn(const float* wt, int k, int n, PackedMatrix* out) {
  out->reset(n, k, nullptr);
  for (int p = 0; p < out->panel_count(); ++p) {
    const int nr = std::min(kPanel, n - p * kPanel);
    float* dst = out->panel(p, 0);
    const std::ptrdiff_t ks = out->k_stride(p);
    const float* src = wt + p * kPanel;
    for (int c = 0; c < k; ++c) std::copy(src + static_cast<std::ptrdiff_t>(c) * n, src + static_cast<std::ptrdiff_t>(c) * n + nr, dst + c * ks);
  }
}

void pack_gate_matrix(const float* w, int H, int k, PackedMatrix* out, float* dst, int group) {
  const int blocks = (H + kPanel - 1) / kPanel;
  out->reset(blocks * 4 * kPanel, k, dst, group);
  for (int g = 0; g < 4; ++g) {
    for (int j = 0; j < H; ++j) put_column(out, gate_column(g, j), w + (static_cast<std::size_t>(g) * H + j) * k);
  }
}

namespace {

// The rows of the micro-kernel call starting at row m of a block of mc: full groups of
// mr, except that a short last group (up to mr / 2 rows: too few accumulators to hide the
// FMA latency, so it runs at half speed or less) shares the group before it evenly, e.g.
// 32 rows with mr = 6 as 6,6,6,6,4,4 rather than 6,6,6,6,6,2. Every element is computed
// the same way whatever its group, so this changes no result.
inline int group_rows(int mr, int mc, int m) {
  const int left = mc - m;
  if (left >= 2 * mr || mr < 6) return std::min(mr, left);
  const int tail = left % mr;
  if (left > mr && tail > 0 && tail <= mr / 2) return (left + 1) / 2;  // the two last groups
  return std::min(mr, left);
}

// Rows of A kept hot per block and the depth of one pass: an MC x KC block of A
// (144 KiB) stays in L2 while every panel of W streams past it. Each pass reads and
// writes every C tile once, and where W streams from L3 those tiles have left L2 too;
// passes of 512 rather than 256 halve that for K = 512. In-process A/B of layers on a
// Zen 5: S3 (64x64x512) 1.046x and 1.028x at 1 thread, 1.016x at 2; B=1, H=512 1.206x
// (the one-row product makes one pass over the panels, not two); K = 256 shapes unchanged
// (S2 0.990x, B=1 H=256 1.031x). KC = 1024 gave the same as 512 on these. (Each pass adds
// its own sum to C, so for 256 < K the last bits differ from KC = 256; every ISA and
// engine shares this blocking, so they still agree with each other.)
constexpr int kMC = 72;
constexpr int kKC = 512;

// A slice of W this large streams from L3 on every call. The first row group of each
// panel would then wait on L3 for every line of the panel, so while the groups of one
// panel run, the next panel is prefetched into L2, a share of its lines before each group.
// That depends on the CPU. Zen 3 (512 KiB of L2 per core), in-process A/B on an S3 layer
// (W 4 MiB): +7-9% at 1 and 2 threads; on smaller slices the prefetches only cost (-2 to
// -5%), so they are off there; with the bound at 512 KiB (packing below included) a
// 2-thread S2 layer ran 2-5% slower. Zen 5 (1 MiB of L2, AVX-512), the same A/B with the
// prefetches off: S2 (2 layers, B=32) 1.214x at 1 thread, S3 1.072x at 1 thread and
// 1.115x at 2. So they run only where the L2 is smaller than 1 MiB (or unknown).
// (WebAssembly has no prefetch.)
#if defined(__wasm__)
constexpr bool kPrefetch = false;
#else
constexpr bool kPrefetch = true;
#endif

// L2 per core in KiB as CPUID reports it (leaf 0x80000006, AMD and Intel), 0 if unknown.
unsigned l2_kib() {
#if defined(__x86_64__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(0x80000000u, &a, &b, &c, &d) && a >= 0x80000006u && __get_cpuid(0x80000006u, &a, &b, &c, &d)) {
    return c >> 16;
  }
#endif
  return 0;
}

std::atomic<int>& panel_prefetch_mode() {  // -1: by the CPU; 0 / 1: forced (tests)
  static std::atomic<int> mode{-1};
  return mode;
}

bool panel_prefetch() {
  static const bool by_cpu = kPrefetch && l2_kib() < 1024;
  const int mode = panel_prefetch_mode().load(std::memory_order_relaxed);
  return mode < 0 ? by_cpu : kPrefetch && mode == 1;
}

constexpr std::size_t kStreamedBytes = std::size_t{1} << 20;

bool streamed_slice(const PackedMatrix& W, int panels) {
  return static_cast<std::size_t>(panels) * W.k * kPanel * sizeof(float) >= kStreamedBytes;
}

// Against such a slice, gemm_nt packs each block of A into k-major slivers (one sequential
// stream per micro-kernel call instead of mr rows apart) when given scratch. In-process
// A/B of layers, same bits: S2 +7%, S3 +6%, B=1 +3% at 1 thread; S3 +1.5% at 2 threads.
// On smaller slices the copy is pure cost (32x256x256: -8%), so it is off there.
// The wasm engine measured no difference (S2 0.98x, S3 1.02x, quartiles +-5-15%): off.
#if defined(__wasm__)
constexpr bool kPackA = false;
#else
constexpr bool kPackA = true;
#endif

// The panels of one call against [p0, p1) of W in processing order: forward from p0, or
// backward from p1 - 1, in units of four full neighbouring panels where `four` (a kernel
// over four) allows, else of two where `two` does, else one; a unit of several panels is
// whole groups of W (the kernels' layout). The unit after the first i panels:
// its lowest panel in *first (the first in memory either way), its width returned.
int panel_unit(const PackedMatrix& W, int p0, int p1, bool backward, int i, bool four, bool two, int* first) {
  const int full = W.n / kPanel;  // panels [0, full) have all 16 columns
  const int left = p1 - p0 - i;
  const int p = backward ? p1 - 1 - i : p0 + i;
  for (const int w : {4, 2}) {
    const int f = backward ? p - (w - 1) : p;
    if ((w == 4 ? four : two) && left >= w && f + w <= full && f % W.group == 0) {
      *first = f;
      return w;
    }
  }
  *first = p;
  return 1;
}

// One block of mc rows of A against panels [p0, p1) of W at depth [k0, k0 + kc), C the
// block's first row. Row m of the block at a + m * row_step (k at stride 1 for the
// row-major kernel, at lda for the k-major one) or, with slivers, the block packed by
// pack_slivers for the k-major kernel (the group from row m at a + m * kc, lda its rows).
// kernel2 (or null): the same kernel over two neighbouring full panels at once, used for
// every two that are whole groups of W (panel_unit); kernel4 (or null, and only for a
// block of as few rows as it takes), over four, used before pairs wherever it fits.
void block_panels(const MicroKernel& uk, MicroKernelFn kernel, MicroKernel2Fn kernel2, MicroKernel2Fn kernel4, int mc,
                  int kc, const float* a,
                  std::ptrdiff_t row_step, std::ptrdiff_t lda, bool slivers, const PackedMatrix& W, int k0, int p0, int p1,
                  bool backward, float* C, std::ptrdiff_t ldc, bool prefetch) {
  const int groups = (mc + uk.mr - 1) / uk.mr;
  for (int i = 0, width = 0; i < p1 - p0; i += width) {
    int p = 0;
    width = panel_unit(W, p0, p1, backward, i, kernel4 != nullptr, kernel2 != nullptr, &p);
    const float* bp = W.panel(p, k0);
    const std::ptrdiff_t ks = W.k_stride(p);
    // While the groups run against this unit, the next one's lines (one per k and panel)
    // are prefetched into L2, a share before each group, row by row as they are read.
    int next_p = 0, next_width = 0;
    if (prefetch && i + width < p1 - p0) {
      next_width = panel_unit(W, p0, p1, backward, i + width, kernel4 != nullptr, kernel2 != nullptr, &next_p);
    }
    const float* next = W.panel(next_p, k0);
    const std::ptrdiff_t next_ks = W.k_stride(next_p);
    const int next_lines = next_width * kc;
    const int lines_per_group = (next_lines + groups - 1) / groups;
    int line = 0;
    for (int m = 0, mr = 0; m < mc; m += mr) {
      mr = group_rows(uk.mr, mc, m);
      for (const int end = std::min(next_lines, line + lines_per_group); line < end; ++line) {
        __builtin_prefetch(
            next + line / next_width * next_ks + neighbour_offset(line % next_width, W.next_panel(), W.panel_after_next()), 0, 1);
      }
      const float* am = slivers ? a + static_cast<std::ptrdiff_t>(m) * kc : a + m * row_step;
      const std::ptrdiff_t ld = slivers ? mr : lda;
      if (width == 4) {
        kernel4(mr, kc, am, ld, bp, ks, W.next_panel(), W.panel_after_next(), C + m * ldc + p * kPanel, ldc);
      } else if (width == 2) {
        kernel2(mr, kc, am, ld, bp, ks, W.next_panel(), W.panel_after_next(), C + m * ldc + p * kPanel, ldc);
      } else {
        kernel(mr, kc, am, ld, bp, ks, C + m * ldc + p * kPanel, ldc, std::min(kPanel, W.n - p * kPanel));
      }
    }
  }
}

// One sliver of pack_slivers (mr rows, through the copy for exactly that many), k outer:
// MR reads a row apart, then MR consecutive writes. On x86-64 four k at a time with SSE,
// which every x86-64 CPU has: four rows are a 4x4 transpose, two rows two unpacks.
// Profiles of S2 at one thread, share of the forward: row by row (the writes MR floats
// apart across the whole sliver) 4.7%, k outer 2.7%, with SSE 1.6%.
template <int MR>
void pack_sliver(int mr, int kc, const float* a, std::ptrdiff_t lda, float* s) {
  if constexpr (MR > 1) {
    if (mr < MR) return pack_sliver<MR - 1>(mr, kc, a, lda, s);
  }
  int k = 0;
#if defined(__SSE2__)
  for (; k + 4 <= kc; k += 4) {
    float* sk = s + static_cast<std::ptrdiff_t>(k) * MR;
    for (int i = 0; i + 4 <= MR; i += 4) {
      __m128 r0 = _mm_loadu_ps(a + i * lda + k), r1 = _mm_loadu_ps(a + (i + 1) * lda + k);
      __m128 r2 = _mm_loadu_ps(a + (i + 2) * lda + k), r3 = _mm_loadu_ps(a + (i + 3) * lda + k);
      _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
      _mm_storeu_ps(sk + i, r0);
      _mm_storeu_ps(sk + MR + i, r1);
      _mm_storeu_ps(sk + 2 * MR + i, r2);
      _mm_storeu_ps(sk + 3 * MR + i, r3);
    }
    if constexpr (MR % 4 >= 2) {
      constexpr int i = MR / 4 * 4;
      const __m128 r0 = _mm_loadu_ps(a + i * lda + k), r1 = _mm_loadu_ps(a + (i + 1) * lda + k);
      const __m128 lo = _mm_unpacklo_ps(r0, r1), hi = _mm_unpackhi_ps(r0, r1);
      _mm_storel_pi(reinterpret_cast<__m64*>(sk + i), lo);
      _mm_storeh_pi(reinterpret_cast<__m64*>(sk + MR + i), lo);
      _mm_storel_pi(reinterpret_cast<__m64*>(sk + 2 * MR + i), hi);
      _mm_storeh_pi(reinterpret_cast<__m64*>(sk + 3 * MR + i), hi);
    }
    if constexpr (MR % 2 == 1) {
      constexpr int i = MR - 1;
      for (int j = 0; j < 4; ++j) sk[j * MR + i] = a[i * lda + k + j];
    }
  }
#endif
  for (; k < kc; ++k) {
    for (int i = 0; i < MR; ++i) s[k * MR + i] = a[i * lda + k];
  }
}

// A row-major block of mc rows of A at depth kc (row m at a + m * lda) copied as one
// k-major sliver per micro-kernel group (the groups of group_rows): the group of mr rows
// from row m at dst + m * kc, a(m + i, k) at [k * mr + i]. The k-major kernel then reads
// its A as one sequential stream, where the block has mr streams a row apart.
void pack_slivers(int mr_max, int mc, int kc, const float* a, std::ptrdiff_t lda, float* dst) {
  for (int m = 0, mr = 0; m < mc; m += mr) {
    mr = group_rows(mr_max, mc, m);
    pack_sliver<kMaxMR>(mr, kc, a + m * lda, lda, dst + static_cast<std::ptrdiff_t>(m) * kc);
  }
}

void gemm_blocked(const MicroKernel& uk, int M, const float* A, std::ptrdiff_t lda, const PackedMatrix& W, int p0,
                  int p1, bool backward, float* C, std::ptrdiff_t ldc, float* scratch) {
  const int K = W.k;
  for (int k0 = 0; k0 < K; k0 += kKC) {
    const int kc = std::min(kKC, K - k0);
    if (M == 1 && uk.gemv4 != nullptr) {
      // One row: four panels per call keep several FMA chains in flight (a single panel
      // has one or two, and stalls on FMA latency). Same per-element order as uk.run,
      // which takes the panels no unit of four does.
      for (int i = 0, width = 0; i < p1 - p0; i += width) {
        int p = 0;
        width = panel_unit(W, p0, p1, backward, i, true, false, &p);
        if (width == 4) {
          uk.gemv4(kc, A + k0, W.panel(p, k0), W.k_stride(p), W.next_panel(), W.panel_after_next(), C + p * kPanel);
        } else {
          uk.run(1, kc, A + k0, lda, W.panel(p, k0), W.k_stride(p), C + p * kPanel, ldc, std::min(kPanel, W.n - p * kPanel));
        }
      }
      continue;
    }
    const bool streamed = streamed_slice(W, p1 - p0);
    const bool prefetch = panel_prefetch();
    for (int m0 = 0; m0 < M; m0 += kMC) {
      const int mc = std::min(kMC, M - m0);
      const float* a = A + m0 * lda + k0;
      const bool pack = kPackA && streamed && scratch != nullptr && mc > uk.mr;
      if (pack) pack_slivers(uk.mr, mc, kc, a, lda, scratch);
      MicroKernel2Fn quad = !pack && mc <= uk.run4_rows ? uk.run4 : nullptr;
      block_panels(uk, pack ? uk.run_t : uk.run, pack ? uk.run2_t : uk.run2, quad, mc, kc, pack ? scratch : a, lda, lda, pack, W,
                   k0, p0, p1, backward, C + m0 * ldc, ldc, streamed && prefetch);
    }
  }
}

}  // namespace

void set_panel_prefetch(int mode) { panel_prefetch_mode().store(mode, std::memory_order_relaxed); }

std::size_t gemm_scratch_floats() { return static_cast<std::size_t>(kMC) * kKC; }

bool gemm_nt_uses_scratch(Isa isa, int M, const PackedMatrix& W, int panels) {
  return kPackA && M > microkernel_for(isa).mr && streamed_slice(W, panels);
}

void gemm_tn_rows(Isa isa, const float* At, std::ptrdiff_t lda, const PackedMatrix& W, int m0, int m1, float* C,
                  std::ptrdiff_t ldc, float* scratch) {
  if (m0 >= m1 || W.n <= 0 || W.k <= 0) return;
  const MicroKernel uk = microkernel_for(isa);
  const int K = W.k;
  const int panels = W.panel_count();
  for (int k0 = 0; k0 < K; k0 += kKC) {
    const int kc = std::min(kKC, K - k0);
    for (int mb = m0; mb < m1; mb += kMC) {
      const int mc = std::min(kMC, m1 - mb);
      // The block At[k0 .. k0+kc, mb .. mb+mc) as kc rows of mc: copies of row pieces,
      // then read by the k-major kernel for every panel of W. (Packed as slivers instead,
      // a dW-shaped 1024x4096x256 ran 8% slower: the copy is slower and W is narrow.)
      for (int kk = 0; kk < kc; ++kk) {
        const float* src = At + static_cast<std::ptrdiff_t>(k0 + kk) * lda + mb;
        std::copy(src, src + mc, scratch + static_cast<std::ptrdiff_t>(kk) * mc);
      }
      block_panels(uk, uk.run_t, uk.run2_t, nullptr, mc, kc, scratch, 1, mc, false, W, k0, 0, panels, false, C + mb * ldc, ldc,
                   false);
    }
  }
}

void gemm_nt(Isa isa, int M, const float* A, std::ptrdiff_t lda, const PackedMatrix& W, float* C, std::ptrdiff_t ldc,
             float* scratch) {
  gemm_nt_panels(isa, M, A, lda, W, 0, W.panel_count(), C, ldc, scratch);
}

void gemm_nt_panels(Isa isa, int M, const float* A, std::ptrdiff_t lda, const PackedMatrix& W, int p0, int p1, float* C,
                    std::ptrdiff_t ldc, float* scratch, bool backward) {
  if (M <= 0 || W.n <= 0 || W.k <= 0 || p0 >= p1) return;
  gemm_blocked(microkernel_for(isa), M, A, lda, W, p0, p1, backward, C, ldc, scratch);
}

}  // namespace lstm
