// The vector vocabulary: one struct of operations per instruction set, so each SIMD
// kernel is written once: gemm_kernels.inc and cell_kernels.inc are instantiated for
// AVX-512, AVX2+FMA, NEON and WebAssembly SIMD128.
//
// Every function carries its ISA's target attribute (LSTM_VEC_*), and the kernels
// instantiated for an ISA carry the same one (LSTM_VEC_FN, defined around each
// inclusion), so one baseline binary holds every x86 path: nothing here runs unless
// runtime dispatch chose it. madd(a, b, c) = a*b + c is fused where the ISA has FMA
// (x86, NEON) and a multiply then an add on SIMD128 (its base proposal has no FMA; the
// relaxed-SIMD build uses f32x4.relaxed_madd, fused where the host can); nmadd(a, b, c) =
// c - a*b likewise. min(a, b) and max(a, b) return a when a is NaN on
// every ISA (the kernels pass the value first and the bound second), so a NaN input
// comes out NaN, as in PyTorch; x86's min/max return their second operand then, and
// SIMD128's pmin/pmax their first, which is also a single instruction where
// f32x4.min/max (NaN from either operand) cost V8 about eight.
#pragma once

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif
#if defined(__wasm_simd128__)
#include <wasm_simd128.h>
#endif

namespace lstm {
namespace vec {

#if defined(__x86_64__)

#define LSTM_VEC_AVX2 __attribute__((target("avx2,fma"), always_inline)) static inline
#define LSTM_VEC_AVX512 __attribute__((target("avx512f,avx2,fma"), always_inline)) static inline

struct Avx2 {
  using V = __m256;
  static constexpr int kLanes = 8;
  LSTM_VEC_AVX2 V zero() { return _mm256_setzero_ps(); }
  LSTM_VEC_AVX2 V set1(float v) { return _mm256_set1_ps(v); }
  LSTM_VEC_AVX2 V load(const float* p) { return _mm256_loadu_ps(p); }
  LSTM_VEC_AVX2 V broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  LSTM_VEC_AVX2 void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  LSTM_VEC_AVX2 V add(V a, V b) { return _mm256_add_ps(a, b); }
  LSTM_VEC_AVX2 V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  LSTM_VEC_AVX2 V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  LSTM_VEC_AVX2 V div(V a, V b) { return _mm256_div_ps(a, b); }
  LSTM_VEC_AVX2 V min(V a, V b) { return _mm256_min_ps(b, a); }
  LSTM_VEC_AVX2 V max(V a, V b) { return _mm256_max_ps(b, a); }
  LSTM_VEC_AVX2 V madd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  LSTM_VEC_AVX2 V nmadd(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }
  LSTM_VEC_AVX2 V floor(V a) { return _mm256_floor_ps(a); }
  LSTM_VEC_AVX2 V neg(V a) { return _mm256_sub_ps(_mm256_setzero_ps(), a); }
  LSTM_VEC_AVX2 V abs(V a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.f), a); }
  // The sign bit of s on the magnitude of m (m >= 0).
  LSTM_VEC_AVX2 V copysign(V m, V s) { return _mm256_or_ps(m, _mm256_and_ps(_mm256_set1_ps(-0.f), s)); }
  // a < b ? x : y
  LSTM_VEC_AVX2 V select_lt(V a, V b, V x, V y) { return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_LT_OQ)); }
  // 2^n for integral n in [-127, 128] (n given as float).
  LSTM_VEC_AVX2 V pow2i(V n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23));
  }
};

// Every lane computes what Avx2's does: the same operations, sixteen lanes wide.
struct Avx512 {
  using V = __m512;
  static constexpr int kLanes = 16;
  LSTM_VEC_AVX512 V zero() { return _mm512_setzero_ps(); }
  LSTM_VEC_AVX512 V set1(float v) { return _mm512_set1_ps(v); }
  LSTM_VEC_AVX512 V load(const float* p) { return _mm512_loadu_ps(p); }
  LSTM_VEC_AVX512 V broadcast(const float* p) { return _mm512_set1_ps(*p); }
  LSTM_VEC_AVX512 void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  LSTM_VEC_AVX512 V add(V a, V b) { return _mm512_add_ps(a, b); }
  LSTM_VEC_AVX512 V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  LSTM_VEC_AVX512 V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  LSTM_VEC_AVX512 V div(V a, V b) { return _mm512_div_ps(a, b); }
  LSTM_VEC_AVX512 V min(V a, V b) { return _mm512_min_ps(b, a); }
  LSTM_VEC_AVX512 V max(V a, V b) { return _mm512_max_ps(b, a); }
  LSTM_VEC_AVX512 V madd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  LSTM_VEC_AVX512 V nmadd(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }
  LSTM_VEC_AVX512 V floor(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
  LSTM_VEC_AVX512 V neg(V a) { return _mm512_sub_ps(_mm512_setzero_ps(), a); }
  // (AVX-512F has no float and/or: the integer ones on the same bits.)
  LSTM_VEC_AVX512 V abs(V a) {
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32(0x7fffffff)));
  }
  LSTM_VEC_AVX512 V copysign(V m, V s) {
    const __m512i sign = _mm512_and_si512(_mm512_castps_si512(s), _mm512_set1_epi32(static_cast<int>(0x80000000u)));
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(m), sign));
  }
  LSTM_VEC_AVX512 V select_lt(V a, V b, V x, V y) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), y, x); }
  LSTM_VEC_AVX512 V pow2i(V n) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127)), 23));
  }
};

#endif  // __x86_64__

#if defined(__aarch64__)

#define LSTM_VEC_NEON __attribute__((always_inline)) static inline

struct Neon {
  using V = float32x4_t;
  static constexpr int kLanes = 4;
  LSTM_VEC_NEON V zero() { return vdupq_n_f32(0.f); }
  LSTM_VEC_NEON V set1(float v) { return vdupq_n_f32(v); }
  LSTM_VEC_NEON V load(const float* p) { return vld1q_f32(p); }
  LSTM_VEC_NEON V broadcast(const float* p) { return vld1q_dup_f32(p); }
  LSTM_VEC_NEON void store(float* p, V v) { vst1q_f32(p, v); }
  LSTM_VEC_NEON V add(V a, V b) { return vaddq_f32(a, b); }
  LSTM_VEC_NEON V sub(V a, V b) { return vsubq_f32(a, b); }
  LSTM_VEC_NEON V mul(V a, V b) { return vmulq_f32(a, b); }
  LSTM_VEC_NEON V div(V a, V b) { return vdivq_f32(a, b); }
  LSTM_VEC_NEON V min(V a, V b) { return vminq_f32(a, b); }
  LSTM_VEC_NEON V max(V a, V b) { return vmaxq_f32(a, b); }
  LSTM_VEC_NEON V madd(V a, V b, V c) { return vfmaq_f32(c, a, b); }
  LSTM_VEC_NEON V nmadd(V a, V b, V c) { return vfmsq_f32(c, a, b); }
  LSTM_VEC_NEON V floor(V a) { return vrndmq_f32(a); }
  LSTM_VEC_NEON V neg(V a) { return vnegq_f32(a); }
  LSTM_VEC_NEON V abs(V a) { return vabsq_f32(a); }
  LSTM_VEC_NEON V copysign(V m, V s) {
    return vreinterpretq_f32_u32(vorrq_u32(vreinterpretq_u32_f32(m), vandq_u32(vreinterpretq_u32_f32(s), vdupq_n_u32(0x80000000u))));
  }
  LSTM_VEC_NEON V select_lt(V a, V b, V x, V y) { return vbslq_f32(vcltq_f32(a, b), x, y); }
  LSTM_VEC_NEON V pow2i(V n) {
    return vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23));
  }
};

#endif  // __aarch64__

#if defined(__wasm_simd128__)

#define LSTM_VEC_SIMD128 __attribute__((always_inline)) static inline

struct Simd128 {
  using V = v128_t;
  static constexpr int kLanes = 4;
  LSTM_VEC_SIMD128 V zero() { return wasm_f32x4_splat(0.f); }
  LSTM_VEC_SIMD128 V set1(float v) { return wasm_f32x4_splat(v); }
  LSTM_VEC_SIMD128 V load(const float* p) { return wasm_v128_load(p); }
  LSTM_VEC_SIMD128 V broadcast(const float* p) { return wasm_v128_load32_splat(p); }
  LSTM_VEC_SIMD128 void store(float* p, V v) { wasm_v128_store(p, v); }
  LSTM_VEC_SIMD128 V add(V a, V b) { return wasm_f32x4_add(a, b); }
  LSTM_VEC_SIMD128 V sub(V a, V b) { return wasm_f32x4_sub(a, b); }
  LSTM_VEC_SIMD128 V mul(V a, V b) { return wasm_f32x4_mul(a, b); }
  LSTM_VEC_SIMD128 V div(V a, V b) { return wasm_f32x4_div(a, b); }
  LSTM_VEC_SIMD128 V min(V a, V b) { return wasm_f32x4_pmin(a, b); }
  LSTM_VEC_SIMD128 V max(V a, V b) { return wasm_f32x4_pmax(a, b); }
#if defined(__wasm_relaxed_simd__)
  // The relaxed-SIMD module (wasm/lstm-relaxed.wasm): one f32x4.relaxed_madd, which the
  // host fuses where its CPU has FMA (x86-64 with FMA3, arm64) and splits elsewhere. The
  // builtins, not wasm_simd128.h's wrappers: clang 16's header has none yet.
  LSTM_VEC_SIMD128 V madd(V a, V b, V c) {
    return (V)__builtin_wasm_relaxed_madd_f32x4((__f32x4)a, (__f32x4)b, (__f32x4)c);
  }
  LSTM_VEC_SIMD128 V nmadd(V a, V b, V c) {
    return (V)__builtin_wasm_relaxed_nmadd_f32x4((__f32x4)a, (__f32x4)b, (__f32x4)c);
  }
#else
  LSTM_VEC_SIMD128 V madd(V a, V b, V c) { return wasm_f32x4_add(wasm_f32x4_mul(a, b), c); }
  LSTM_VEC_SIMD128 V nmadd(V a, V b, V c) { return wasm_f32x4_sub(c, wasm_f32x4_mul(a, b)); }
#endif
  LSTM_VEC_SIMD128 V floor(V a) { return wasm_f32x4_floor(a); }
  LSTM_VEC_SIMD128 V neg(V a) { return wasm_f32x4_neg(a); }
  LSTM_VEC_SIMD128 V abs(V a) { return wasm_f32x4_abs(a); }
  LSTM_VEC_SIMD128 V copysign(V m, V s) { return wasm_v128_or(m, wasm_v128_and(wasm_f32x4_splat(-0.f), s)); }
  LSTM_VEC_SIMD128 V select_lt(V a, V b, V x, V y) { return wasm_v128_bitselect(x, y, wasm_f32x4_lt(a, b)); }
  LSTM_VEC_SIMD128 V pow2i(V n) {
    return wasm_i32x4_shl(wasm_i32x4_add(wasm_i32x4_trunc_sat_f32x4(n), wasm_i32x4_splat(127)), 23);
  }
};

#endif  // __wasm_simd128__

}  // namespace vec
}  // namespace lstm
