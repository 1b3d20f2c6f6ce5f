// Activation functions by kind index. The indices are part of the JS<->C++ ABI
// (ACTIVATIONS in lib/config.ts) and follow the ONNX LSTM set.
#pragma once

#include <cmath>

namespace lstm {

enum ActKind : int {
  kSigmoid = 0, kTanh = 1, kRelu = 2, kHardSigmoid = 3, kLeakyRelu = 4, kThresholdedRelu = 5,
  kScaledTanh = 6, kAffine = 7, kElu = 8, kSoftsign = 9, kSoftplus = 10, kActKindCount = 11,
};

struct Activation {
  int kind = kSigmoid;
  float alpha = 0.f;
  float beta = 0.f;
};

inline float activate(const Activation& a, float x) {
  switch (a.kind) {
    case kSigmoid: return 1.f / (1.f + std::exp(-x));
    case kTanh: return std::tanh(x);
    case kRelu: return x > 0.f ? x : 0.f;
    case kHardSigmoid: {
      float v = a.alpha * x + a.beta;
      return v < 0.f ? 0.f : (v > 1.f ? 1.f : v);
    }
    case kLeakyRelu: return x >= 0.f ? x : a.alpha * x;
    case kThresholdedRelu: return x > a.alpha ? x : 0.f;
    case kScaledTanh: return a.alpha * std::tanh(a.beta * x);
    case kAffine: return a.alpha * x + a.beta;
    case kElu: return x >= 0.f ? x : a.alpha * (std::exp(x) - 1.f);
    case kSoftsign: return x / (1.f + std::fabs(x));
    case kSoftplus: return x > 20.f ? x : std::log1p(std::exp(x));
    default: return x;
  }
}

}  // namespace lstm
