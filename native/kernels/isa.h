// Instruction-set selection: detect the CPU once, let LSTM_ISA override it.
#pragma once

namespace lstm {

// kSimd128 is WebAssembly's 128-bit SIMD (only the wasm build has it), kNeon arm64's
// Advanced SIMD (every arm64 CPU has it). kScalar is the portable code everywhere.
enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kSimd128 = 3, kNeon = 4 };

const char* isa_name(Isa isa);
// True when this CPU (and this build) can run `isa`.
bool isa_supported(Isa isa);
// The best ISA this CPU supports.
Isa best_isa();
// Parse "scalar" | "avx2" | "avx512" | "simd128" | "neon"; false for anything else.
bool parse_isa(const char* text, Isa* out);

}  // namespace lstm
