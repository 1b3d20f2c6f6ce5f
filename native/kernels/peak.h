// Measures this core's fp32 FMA throughput, the ceiling the benchmark reports against.
#pragma once

#include "isa.h"

namespace lstm {

// GFLOP/s of independent FMA chains on `isa` for about `seconds`.
double measure_fma_peak(Isa isa, double seconds);

}  // namespace lstm
