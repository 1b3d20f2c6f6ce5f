#include "isa.h"

#include <cstring>

namespace lstm {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    case Isa::kSimd128: return "simd128";
    case Isa::kNeon: return "neon";
    default: return "scalar";
  }
}

bool isa_supported(Isa isa) {
  if (isa == Isa::kScalar) return true;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (isa == Isa::kAvx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (isa == Isa::kAvx512) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }
#endif
#if defined(__wasm_simd128__)
  if (isa == Isa::kSimd128) return true;
#endif
#if defined(__aarch64__)
  if (isa == Isa::kNeon) return true;
#endif
  return false;
}

Isa best_isa() {
  if (isa_supported(Isa::kSimd128)) return Isa::kSimd128;
  if (isa_supported(Isa::kNeon)) return Isa::kNeon;
  if (isa_supported(Isa::kAvx512)) return Isa::kAvx512;
  if (isa_supported(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kScalar;
}

bool parse_isa(const char* text, Isa* out) {
  if (text == nullptr) return false;
  if (std::strcmp(text, "scalar") == 0) { *out = Isa::kScalar; return true; }
  if (std::strcmp(text, "avx2") == 0) { *out = Isa::kAvx2; return true; }
  if (std::strcmp(text, "avx512") == 0) { *out = Isa::kAvx512; return true; }
  if (std::strcmp(text, "simd128") == 0) { *out = Isa::kSimd128; return true; }
  if (std::strcmp(text, "neon") == 0) { *out = Isa::kNeon; return true; }
  return false;
}

}  // namespace lstm
