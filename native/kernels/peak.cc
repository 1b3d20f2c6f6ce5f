#include "peak.h"

#include <chrono>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace lstm {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

#if defined(__x86_64__)
// 12 independent chains cover the FMA latency x throughput product of current cores.
__attribute__((target("avx2,fma"))) float fma_chains_avx2(long iters) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(0.001f * i);
  const __m256 m = _mm256_set1_ps(0.9999f);
  const __m256 a = _mm256_set1_ps(0.0001f);
  for (long k = 0; k < iters; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], m, a);
  }
  __m256 s = acc[0];
#pragma GCC unroll 12
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  return _mm256_cvtss_f32(s);
}

__attribute__((target("avx512f"))) float fma_chains_avx512(long iters) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(0.001f * i);
  const __m512 m = _mm512_set1_ps(0.9999f);
  const __m512 a = _mm512_set1_ps(0.0001f);
  for (long k = 0; k < iters; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], m, a);
  }
  __m512 s = acc[0];
#pragma GCC unroll 12
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, acc[i]);
  // Summed by hand: _mm512_reduce_add_ps trips a -Wuninitialized false positive in GCC 12's header.
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  float total = 0.f;
  for (float v : lanes) total += v;
  return total;
}
#endif

float scalar_chains(long iters) {
  float acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = 0.001f * i;
  for (long k = 0; k < iters; ++k)
    for (int i = 0; i < 16; ++i) acc[i] = acc[i] * 0.9999f + 0.0001f;
  float s = 0;
  for (float v : acc) s += v;
  return s;
}

volatile float sink;

}  // namespace

double measure_fma_peak(Isa isa, double seconds) {
  double flops_per_iter = 2.0 * 16;
  float (*run)(long) = scalar_chains;
#if defined(__x86_64__)
  if (isa == Isa::kAvx512) {
    run = fma_chains_avx512;
    flops_per_iter = 2.0 * 12 * 16;
  } else if (isa == Isa::kAvx2) {
    run = fma_chains_avx2;
    flops_per_iter = 2.0 * 12 * 8;
  }
#else
  (void)isa;  // arm64: the portable chains (auto-vectorised to NEON)
#endif
  // Best of several short windows: the machine may be shared, the peak is what the core can do.
  long iters = 1 << 16;
  double best = 0;
  const auto start = std::chrono::steady_clock::now();
  while (seconds_since(start) < seconds) {
    const auto t0 = std::chrono::steady_clock::now();
    sink = run(iters);
    const double dt = seconds_since(t0);
    if (dt < 0.005) {
      iters *= 2;
      continue;
    }
    const double gflops = iters * flops_per_iter / dt / 1e9;
    if (gflops > best) best = gflops;
  }
  return best;
}

}  // namespace lstm
