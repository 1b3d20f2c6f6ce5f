#include "cell.h"

#include <algorithm>

#include "gemm.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace lstm {

namespace {

inline float clampf(float v, float clip) { return clip > 0.f ? std::min(std::max(v, -clip), clip) : v; }

// The oracle: one element at a time, any activation. g is one row of gates.
void cell_scalar_range(const CellSpec& s, int j0, int j1, const float* g, const float* cp, float* co, float* ro) {
  for (int j = j0; j < j1; ++j) {
    const float c_prev = cp[j];
    const float* gj = g + gate_column(0, j);
    float zi = gj[0];
    float zf = gj[kPanel];
    float zg = gj[2 * kPanel];
    float zo = gj[3 * kPanel];
    if (s.wci) {
      zi += s.wci[j] * c_prev;
      zf += s.wcf[j] * c_prev;
    }
    const float i = activate(s.gate, clampf(zi, s.clip));
    const float f = s.coupled ? 1.f - i : activate(s.gate, clampf(zf, s.clip));
    const float c = f * c_prev + i * activate(s.cell, clampf(zg, s.clip));
    if (s.wco) zo += s.wco[j] * c;
    co[j] = c;
    ro[j] = activate(s.gate, clampf(zo, s.clip)) * activate(s.out, c);
  }
}

#if defined(__x86_64__)

#define LSTM_AVX2 __attribute__((target("avx2,fma")))

// exp with Cephes' range reduction and degree-6 polynomial: ~1 ulp on [-87, 88].
LSTM_AVX2 inline __m256 exp_avx2(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33654f)), _mm256_set1_ps(88.f));
  __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.f)));
  const __m256i n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

LSTM_AVX2 inline __m256 sigmoid_avx2(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

// tanh: odd polynomial below |x| = 0.625 (no cancellation near 0), 1 - 2/(e^{2|x|}+1) above.
LSTM_AVX2 inline __m256 tanh_avx2(__m256 x) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  const __m256 ax = _mm256_andnot_ps(sign, x);
  const __m256 z = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(-5.70498872745e-3f);
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(2.06390887954e-2f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-5.37397155531e-2f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(1.33314422036e-1f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-3.33332819422e-1f));
  const __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, z), x, x);
  const __m256 e = exp_avx2(_mm256_min_ps(_mm256_add_ps(ax, ax), _mm256_set1_ps(20.f)));
  const __m256 one = _mm256_set1_ps(1.f);
  const __m256 large = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.f), _mm256_add_ps(e, one)));
  const __m256 signed_large = _mm256_or_ps(large, _mm256_and_ps(sign, x));
  return _mm256_blendv_ps(signed_large, small, _mm256_cmp_ps(ax, _mm256_set1_ps(0.625f), _CMP_LT_OQ));
}

LSTM_AVX2 inline __m256 clamp_avx2(__m256 v, __m256 lo, __m256 hi) { return _mm256_min_ps(_mm256_max_ps(v, lo), hi); }

// sigmoid/tanh/tanh cells (PyTorch's, and ONNX's default) with peepholes, clip, coupling:
// eight units at a time, the remainder of a partial last block through the oracle.
LSTM_AVX2 void cell_avx2(const CellSpec& s, int B, const float* gates, std::ptrdiff_t ldg, int block0, int block1,
                         const float* c_prev, float* c_out, float* r_out) {
  const int H = s.hidden;
  const bool clip = s.clip > 0.f;
  const __m256 lo = _mm256_set1_ps(-s.clip);
  const __m256 hi = _mm256_set1_ps(s.clip);
  const __m256 one = _mm256_set1_ps(1.f);
  const int j_end = std::min(block1 * kPanel, H);
  for (int b = 0; b < B; ++b) {
    const float* grow = gates + b * ldg;
    const float* cp = c_prev + static_cast<std::ptrdiff_t>(b) * H;
    float* co = c_out + static_cast<std::ptrdiff_t>(b) * H;
    float* ro = r_out + static_cast<std::ptrdiff_t>(b) * H;
    int j = block0 * kPanel;
    for (; j + 8 <= j_end; j += 8) {
      const float* g = grow + gate_column(0, j);
      const __m256 c_prev_v = _mm256_loadu_ps(cp + j);
      __m256 zi = _mm256_loadu_ps(g);
      __m256 zf = _mm256_loadu_ps(g + kPanel);
      __m256 zg = _mm256_loadu_ps(g + 2 * kPanel);
      __m256 zo = _mm256_loadu_ps(g + 3 * kPanel);
      if (s.wci) {
        zi = _mm256_fmadd_ps(_mm256_loadu_ps(s.wci + j), c_prev_v, zi);
        zf = _mm256_fmadd_ps(_mm256_loadu_ps(s.wcf + j), c_prev_v, zf);
      }
      if (clip) {
        zi = clamp_avx2(zi, lo, hi);
        zf = clamp_avx2(zf, lo, hi);
        zg = clamp_avx2(zg, lo, hi);
      }
      const __m256 i = sigmoid_avx2(zi);
      const __m256 f = s.coupled ? _mm256_sub_ps(one, i) : sigmoid_avx2(zf);
      const __m256 c = _mm256_fmadd_ps(f, c_prev_v, _mm256_mul_ps(i, tanh_avx2(zg)));
      if (s.wco) zo = _mm256_fmadd_ps(_mm256_loadu_ps(s.wco + j), c, zo);
      if (clip) zo = clamp_avx2(zo, lo, hi);
      _mm256_storeu_ps(co + j, c);
      _mm256_storeu_ps(ro + j, _mm256_mul_ps(sigmoid_avx2(zo), tanh_avx2(c)));
    }
    cell_scalar_range(s, j, j_end, grow, cp, co, ro);
  }
}

LSTM_AVX2 void map_avx2(bool sigmoid, const float* x, float* y, int n) {
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    _mm256_storeu_ps(y + j, sigmoid ? sigmoid_avx2(v) : tanh_avx2(v));
  }
  const Activation a{sigmoid ? kSigmoid : kTanh, 0.f, 0.f};
  for (; j < n; ++j) y[j] = activate(a, x[j]);
}

#endif  // __x86_64__

bool standard_acts(const CellSpec& s) {
  return s.gate.kind == kSigmoid && s.cell.kind == kTanh && s.out.kind == kTanh;
}

}  // namespace

void cell_forward(Isa isa, const CellSpec& spec, int B, const float* gates, std::ptrdiff_t ldg, int block0, int block1,
                  const float* c_prev, float* c_out, float* r_out) {
#if defined(__x86_64__)
  if (isa != Isa::kScalar && standard_acts(spec)) {
    cell_avx2(spec, B, gates, ldg, block0, block1, c_prev, c_out, r_out);
    return;
  }
#else
  (void)isa;
#endif
  const int H = spec.hidden;
  const int j0 = block0 * kPanel;
  const int j1 = std::min(block1 * kPanel, H);
  for (int b = 0; b < B; ++b) {
    cell_scalar_range(spec, j0, j1, gates + b * ldg, c_prev + static_cast<std::ptrdiff_t>(b) * H,
                      c_out + static_cast<std::ptrdiff_t>(b) * H, r_out + static_cast<std::ptrdiff_t>(b) * H);
  }
}

void sigmoid_vec(Isa isa, const float* x, float* y, int n) {
#if defined(__x86_64__)
  if (isa != Isa::kScalar) return map_avx2(true, x, y, n);
#else
  (void)isa;
#endif
  const Activation a{kSigmoid, 0.f, 0.f};
  for (int j = 0; j < n; ++j) y[j] = activate(a, x[j]);
}

void tanh_vec(Isa isa, const float* x, float* y, int n) {
#if defined(__x86_64__)
  if (isa != Isa::kScalar) return map_avx2(false, x, y, n);
#else
  (void)isa;
#endif
  const Activation a{kTanh, 0.f, 0.f};
  for (int j = 0; j < n; ++j) y[j] = activate(a, x[j]);
}

}  // namespace lstm
