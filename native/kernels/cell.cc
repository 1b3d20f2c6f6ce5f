#include "cell.h"

#include <algorithm>

#include "gemm.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(__wasm_simd128__)
#include <wasm_simd128.h>
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

#if defined(__wasm_simd128__)

// The same approximations as the AVX2 path, in WebAssembly SIMD128 (four lanes, and a
// multiply then an add where AVX2 has a fused multiply-add).
inline v128_t madd128(v128_t a, v128_t b, v128_t c) { return wasm_f32x4_add(wasm_f32x4_mul(a, b), c); }
inline v128_t set128(float v) { return wasm_f32x4_splat(v); }

inline v128_t exp_simd128(v128_t x) {
  x = wasm_f32x4_min(wasm_f32x4_max(x, set128(-87.33654f)), set128(88.f));
  const v128_t fx = wasm_f32x4_floor(madd128(x, set128(1.44269504088896341f), set128(0.5f)));
  x = wasm_f32x4_sub(x, wasm_f32x4_mul(fx, set128(0.693359375f)));
  x = wasm_f32x4_sub(x, wasm_f32x4_mul(fx, set128(-2.12194440e-4f)));
  v128_t y = set128(1.9875691500e-4f);
  y = madd128(y, x, set128(1.3981999507e-3f));
  y = madd128(y, x, set128(8.3334519073e-3f));
  y = madd128(y, x, set128(4.1665795894e-2f));
  y = madd128(y, x, set128(1.6666665459e-1f));
  y = madd128(y, x, set128(5.0000001201e-1f));
  y = madd128(y, wasm_f32x4_mul(x, x), wasm_f32x4_add(x, set128(1.f)));
  const v128_t n = wasm_i32x4_shl(wasm_i32x4_add(wasm_i32x4_trunc_sat_f32x4(fx), wasm_i32x4_splat(127)), 23);
  return wasm_f32x4_mul(y, n);
}

inline v128_t sigmoid_simd128(v128_t x) {
  const v128_t one = set128(1.f);
  return wasm_f32x4_div(one, wasm_f32x4_add(one, exp_simd128(wasm_f32x4_neg(x))));
}

inline v128_t tanh_simd128(v128_t x) {
  const v128_t ax = wasm_f32x4_abs(x);
  const v128_t z = wasm_f32x4_mul(x, x);
  v128_t p = set128(-5.70498872745e-3f);
  p = madd128(p, z, set128(2.06390887954e-2f));
  p = madd128(p, z, set128(-5.37397155531e-2f));
  p = madd128(p, z, set128(1.33314422036e-1f));
  p = madd128(p, z, set128(-3.33332819422e-1f));
  const v128_t small = madd128(wasm_f32x4_mul(p, z), x, x);
  const v128_t e = exp_simd128(wasm_f32x4_min(wasm_f32x4_add(ax, ax), set128(20.f)));
  const v128_t one = set128(1.f);
  const v128_t large = wasm_f32x4_sub(one, wasm_f32x4_div(set128(2.f), wasm_f32x4_add(e, one)));
  const v128_t signed_large = wasm_v128_or(large, wasm_v128_and(set128(-0.f), x));
  return wasm_v128_bitselect(small, signed_large, wasm_f32x4_lt(ax, set128(0.625f)));
}

inline v128_t clamp_simd128(v128_t v, v128_t lo, v128_t hi) { return wasm_f32x4_min(wasm_f32x4_max(v, lo), hi); }

void cell_simd128(const CellSpec& s, int B, const float* gates, std::ptrdiff_t ldg, int block0, int block1,
                  const float* c_prev, float* c_out, float* r_out) {
  const int H = s.hidden;
  const bool clip = s.clip > 0.f;
  const v128_t lo = set128(-s.clip);
  const v128_t hi = set128(s.clip);
  const v128_t one = set128(1.f);
  const int j_end = std::min(block1 * kPanel, H);
  for (int b = 0; b < B; ++b) {
    const float* grow = gates + b * ldg;
    const float* cp = c_prev + static_cast<std::ptrdiff_t>(b) * H;
    float* co = c_out + static_cast<std::ptrdiff_t>(b) * H;
    float* ro = r_out + static_cast<std::ptrdiff_t>(b) * H;
    int j = block0 * kPanel;
    for (; j + 4 <= j_end; j += 4) {
      const float* g = grow + gate_column(0, j);
      const v128_t c_prev_v = wasm_v128_load(cp + j);
      v128_t zi = wasm_v128_load(g);
      v128_t zf = wasm_v128_load(g + kPanel);
      v128_t zg = wasm_v128_load(g + 2 * kPanel);
      v128_t zo = wasm_v128_load(g + 3 * kPanel);
      if (s.wci) {
        zi = madd128(wasm_v128_load(s.wci + j), c_prev_v, zi);
        zf = madd128(wasm_v128_load(s.wcf + j), c_prev_v, zf);
      }
      if (clip) {
        zi = clamp_simd128(zi, lo, hi);
        zf = clamp_simd128(zf, lo, hi);
        zg = clamp_simd128(zg, lo, hi);
      }
      const v128_t i = sigmoid_simd128(zi);
      const v128_t f = s.coupled ? wasm_f32x4_sub(one, i) : sigmoid_simd128(zf);
      const v128_t c = madd128(f, c_prev_v, wasm_f32x4_mul(i, tanh_simd128(zg)));
      if (s.wco) zo = madd128(wasm_v128_load(s.wco + j), c, zo);
      if (clip) zo = clamp_simd128(zo, lo, hi);
      wasm_v128_store(co + j, c);
      wasm_v128_store(ro + j, wasm_f32x4_mul(sigmoid_simd128(zo), tanh_simd128(c)));
    }
    cell_scalar_range(s, j, j_end, grow, cp, co, ro);
  }
}

void map_simd128(bool sigmoid, const float* x, float* y, int n) {
  int j = 0;
  for (; j + 4 <= n; j += 4) {
    const v128_t v = wasm_v128_load(x + j);
    wasm_v128_store(y + j, sigmoid ? sigmoid_simd128(v) : tanh_simd128(v));
  }
  const Activation a{sigmoid ? kSigmoid : kTanh, 0.f, 0.f};
  for (; j < n; ++j) y[j] = activate(a, x[j]);
}

#endif  // __wasm_simd128__

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
#elif defined(__wasm_simd128__)
  if (isa == Isa::kSimd128 && standard_acts(spec)) {
    cell_simd128(spec, B, gates, ldg, block0, block1, c_prev, c_out, r_out);
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
#elif defined(__wasm_simd128__)
  if (isa == Isa::kSimd128) return map_simd128(true, x, y, n);
#else
  (void)isa;
#endif
  const Activation a{kSigmoid, 0.f, 0.f};
  for (int j = 0; j < n; ++j) y[j] = activate(a, x[j]);
}

void tanh_vec(Isa isa, const float* x, float* y, int n) {
#if defined(__x86_64__)
  if (isa != Isa::kScalar) return map_avx2(false, x, y, n);
#elif defined(__wasm_simd128__)
  if (isa == Isa::kSimd128) return map_simd128(false, x, y, n);
#else
  (void)isa;
#endif
  const Activation a{kTanh, 0.f, 0.f};
  for (int j = 0; j < n; ++j) y[j] = activate(a, x[j]);
}

}  // namespace lstm
