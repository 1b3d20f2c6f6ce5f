// N-API surface only: argument checks, the Layer object, errors with stable codes.
// All numerics live in native/kernels; per-environment state lives in the Addon
// instance (no statics), so the addon loads in several worker threads at once.
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <new>
#include <string>

#include "../kernels/isa.h"
#include "../kernels/layer.h"
#include "../kernels/peak.h"

namespace {

constexpr int kAbiVersion = 1;
constexpr int64_t kMaxElements = (int64_t{1} << 31) - 1;

// A JS exception carrying one of the library's error codes.
class CodedError {
 public:
  CodedError(const char* code, std::string message) : code_(code), message_(std::move(message)) {}
  [[noreturn]] void Throw(Napi::Env env) const {
    Napi::Error err = Napi::Error::New(env, message_);
    err.Set("code", Napi::String::New(env, code_));
    throw err;
  }

 private:
  const char* code_;
  std::string message_;
};

[[noreturn]] void Fail(Napi::Env env, const char* code, const std::string& message) { CodedError(code, message).Throw(env); }

std::string TypeOfValue(const Napi::Value& v) {
  switch (v.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "boolean";
    case napi_number: return "number";
    case napi_string: return "string";
    case napi_bigint: return "bigint";
    case napi_function: return "function";
    default:
      if (v.IsTypedArray()) return "a typed array of another type";
      return "object";
  }
}

int32_t IntArg(Napi::Env env, const Napi::Value& v, const char* name, int32_t min, int32_t max) {
  if (!v.IsNumber()) Fail(env, "LSTM_SHAPE", std::string(name) + ": expected an integer, got " + TypeOfValue(v));
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= min && d <= max) || std::floor(d) != d) {
    Fail(env, "LSTM_SHAPE", std::string(name) + ": expected an integer in [" + std::to_string(min) + ", " +
                                std::to_string(max) + "], got " + std::to_string(d));
  }
  return static_cast<int32_t>(d);
}

// A Float32Array of exactly `expected` elements (a detached buffer has none).
Napi::Float32Array FloatArg(Napi::Env env, const Napi::Value& v, const std::string& name, int64_t expected) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    Fail(env, "LSTM_DTYPE", name + ": expected a Float32Array, got " + TypeOfValue(v));
  }
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  if (static_cast<int64_t>(a.ElementLength()) != expected) {
    Fail(env, "LSTM_SHAPE", name + ": expected " + std::to_string(expected) + " elements, got " +
                                std::to_string(a.ElementLength()));
  }
  if (expected > 0 && a.Data() == nullptr) Fail(env, "LSTM_SHAPE", name + ": buffer is detached");
  return a;
}

lstm::Activation ActivationArg(Napi::Env env, const Napi::Object& desc, const char* key) {
  Napi::Value v = desc.Get(key);
  if (!v.IsObject()) Fail(env, "LSTM_OPTION", std::string("desc.") + key + ": expected an activation object");
  Napi::Object o = v.As<Napi::Object>();
  lstm::Activation a;
  a.kind = IntArg(env, o.Get("kind"), key, 0, lstm::kActKindCount - 1);
  Napi::Value alpha = o.Get("alpha");
  Napi::Value beta = o.Get("beta");
  if (!alpha.IsNumber() || !beta.IsNumber()) Fail(env, "LSTM_OPTION", std::string(key) + ": alpha/beta must be numbers");
  a.alpha = alpha.As<Napi::Number>().FloatValue();
  a.beta = beta.As<Napi::Number>().FloatValue();
  if (!std::isfinite(a.alpha) || !std::isfinite(a.beta)) Fail(env, "LSTM_OPTION", std::string(key) + ": alpha/beta must be finite");
  return a;
}

bool BoolArg(Napi::Env env, const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsBoolean()) Fail(env, "LSTM_OPTION", std::string("desc.") + key + ": expected a boolean");
  return v.As<Napi::Boolean>().Value();
}

class LstmAddon;

class LayerWrap : public Napi::ObjectWrap<LayerWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Layer", {InstanceMethod("forward", &LayerWrap::Forward), InstanceMethod("dispose", &LayerWrap::Dispose)});
  }

  LayerWrap(const Napi::CallbackInfo& info);

 private:
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    layer_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<const lstm::Layer> layer_;
  lstm::Isa isa_ = lstm::Isa::kScalar;
};

class LstmAddon : public Napi::Addon<LstmAddon> {
 public:
  LstmAddon(Napi::Env env, Napi::Object exports) : best_(lstm::best_isa()) {
    DefineAddon(exports, {
                             InstanceValue("abiVersion", Napi::Number::New(env, kAbiVersion), napi_enumerable),
                             InstanceMethod("isa", &LstmAddon::IsaName, napi_enumerable),
                             InstanceMethod("supportedIsas", &LstmAddon::SupportedIsas, napi_enumerable),
                             InstanceMethod("measurePeak", &LstmAddon::MeasurePeak, napi_enumerable),
                             InstanceValue("Layer", LayerWrap::Define(env), napi_enumerable),
                         });
  }

  // The ISA to run for a requested name ('' = the best this CPU has). A request
  // for an ISA the CPU lacks steps down to the best one it has, never beyond.
  lstm::Isa Resolve(Napi::Env env, const Napi::Value& requested) const {
    if (requested.IsUndefined() || requested.IsNull()) return best_;
    if (!requested.IsString()) Fail(env, "LSTM_OPTION", "LSTM_ISA: expected a string");
    const std::string want = requested.As<Napi::String>().Utf8Value();
    if (want.empty()) return best_;
    lstm::Isa isa;
    if (!lstm::parse_isa(want.c_str(), &isa)) {
      Fail(env, "LSTM_OPTION", "LSTM_ISA: expected one of avx512, avx2, scalar, got '" + want + "'");
    }
    while (!lstm::isa_supported(isa)) isa = static_cast<lstm::Isa>(static_cast<int>(isa) - 1);
    return isa;
  }


 private:
  Napi::Value IsaName(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), lstm::isa_name(Resolve(info.Env(), info[0])));
  }
  // measurePeak(isa?: string, seconds = 0.5): GFLOP/s of one core on that ISA.
  Napi::Value MeasurePeak(const Napi::CallbackInfo& info) {
    const lstm::Isa isa = Resolve(info.Env(), info[0]);
    double seconds = 0.5;
    if (info.Length() > 1 && info[1].IsNumber()) seconds = info[1].As<Napi::Number>().DoubleValue();
    if (!(seconds > 0 && seconds <= 10)) Fail(info.Env(), "LSTM_OPTION", "measurePeak: seconds must be in (0, 10]");
    return Napi::Number::New(info.Env(), lstm::measure_fma_peak(isa, seconds));
  }

  Napi::Value SupportedIsas(const Napi::CallbackInfo& info) {
    Napi::Array out = Napi::Array::New(info.Env());
    uint32_t n = 0;
    for (lstm::Isa i : {lstm::Isa::kScalar, lstm::Isa::kAvx2, lstm::Isa::kAvx512}) {
      if (lstm::isa_supported(i)) out.Set(n++, Napi::String::New(info.Env(), lstm::isa_name(i)));
    }
    return out;
  }

  const lstm::Isa best_;  // detected once per environment
};

LayerWrap::LayerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<LayerWrap>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsArray()) {
    Fail(env, "LSTM_OPTION", "Layer(desc, dirs): expected a descriptor object and an array of direction weights");
  }
  Napi::Object d = info[0].As<Napi::Object>();
  lstm::LayerDesc desc;
  constexpr int32_t kMaxSize = 1 << 24;
  desc.input_size = IntArg(env, d.Get("inputSize"), "desc.inputSize", 1, kMaxSize);
  desc.hidden_size = IntArg(env, d.Get("hiddenSize"), "desc.hiddenSize", 1, kMaxSize);
  desc.proj_size = IntArg(env, d.Get("projSize"), "desc.projSize", 0, desc.hidden_size - 1);
  desc.num_directions = IntArg(env, d.Get("numDirections"), "desc.numDirections", 1, 2);
  desc.reverse = BoolArg(env, d, "reverse");
  desc.bias = BoolArg(env, d, "bias");
  desc.peephole = IntArg(env, d.Get("peephole"), "desc.peephole", 0, 2);
  desc.gate = ActivationArg(env, d, "gate");
  desc.cell = ActivationArg(env, d, "cell");
  desc.hidden = ActivationArg(env, d, "hidden");
  Napi::Value clip = d.Get("clip");
  if (!clip.IsNumber()) Fail(env, "LSTM_OPTION", "desc.clip: expected a number");
  const double clip_v = clip.As<Napi::Number>().DoubleValue();
  if (!(clip_v >= 0) || !std::isfinite(clip_v)) Fail(env, "LSTM_OPTION", "desc.clip: expected a finite number >= 0");
  desc.clip = static_cast<float>(clip_v);
  desc.coupled = BoolArg(env, d, "coupled");
  isa_ = env.GetInstanceData<LstmAddon>()->Resolve(env, d.Get("isa"));

  const int64_t H = desc.hidden_size;
  const int64_t Hout = desc.out_size();
  const int64_t widest = std::max<int64_t>(desc.input_size, Hout) + H;
  if (4 * H * widest > kMaxElements) Fail(env, "LSTM_OPTION", "desc: weight matrices larger than 2^31 elements");

  Napi::Array dirs = info[1].As<Napi::Array>();
  if (dirs.Length() != static_cast<uint32_t>(desc.num_directions)) {
    Fail(env, "LSTM_WEIGHTS", "dirs: expected " + std::to_string(desc.num_directions) + " direction objects, got " +
                                  std::to_string(dirs.Length()));
  }
  lstm::DirectionWeightsView views[2];
  for (uint32_t i = 0; i < dirs.Length(); ++i) {
    Napi::Value dv = dirs.Get(i);
    if (!dv.IsObject()) Fail(env, "LSTM_WEIGHTS", "dirs[" + std::to_string(i) + "]: expected an object");
    Napi::Object o = dv.As<Napi::Object>();
    const std::string at = "dirs[" + std::to_string(i) + "].";
    lstm::DirectionWeightsView& v = views[i];
    v.w_ih = FloatArg(env, o.Get("wIh"), at + "wIh", 4 * H * desc.input_size).Data();
    v.w_hh = FloatArg(env, o.Get("wHh"), at + "wHh", 4 * H * Hout).Data();
    if (desc.bias) {
      v.b_ih = FloatArg(env, o.Get("bIh"), at + "bIh", 4 * H).Data();
      v.b_hh = FloatArg(env, o.Get("bHh"), at + "bHh", 4 * H).Data();
    }
    if (desc.proj_size > 0) v.w_hr = FloatArg(env, o.Get("wHr"), at + "wHr", Hout * H).Data();
    if (desc.peephole == lstm::kPeepholeDiagonal) {
      v.w_ci = FloatArg(env, o.Get("wCi"), at + "wCi", H).Data();
      v.w_cf = FloatArg(env, o.Get("wCf"), at + "wCf", H).Data();
      v.w_co = FloatArg(env, o.Get("wCo"), at + "wCo", H).Data();
    } else if (desc.peephole == lstm::kPeepholeFull) {
      v.w_ch = FloatArg(env, o.Get("wCh"), at + "wCh", 4 * H * H).Data();
    }
  }
  try {
    layer_ = std::make_shared<const lstm::Layer>(desc, views);
  } catch (const std::bad_alloc&) {
    Fail(env, "LSTM_NATIVE", "out of memory while packing weights");
  }
}

Napi::Value LayerWrap::Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!layer_) Fail(env, "LSTM_DISPOSED", "forward: this layer was disposed");
  if (info.Length() != 9) Fail(env, "LSTM_OPTION", "forward: expected 9 arguments");
  const lstm::LayerDesc& desc = layer_->desc();
  lstm::LayerRun run;
  run.T = IntArg(env, info[1], "T", 1, std::numeric_limits<int32_t>::max());
  run.B = IntArg(env, info[2], "B", 1, std::numeric_limits<int32_t>::max());
  const int64_t T = run.T;
  const int64_t B = run.B;
  const int64_t D = desc.num_directions;
  const int64_t H = desc.hidden_size;
  const int64_t Hout = desc.out_size();
  // Every product below stays far from int64 overflow: each factor is < 2^31 and
  // the first product is checked before the next one is formed.
  if (T * B > kMaxElements || T * B * desc.input_size > kMaxElements || T * B * D * Hout > kMaxElements ||
      T * B * 4 * H > (int64_t{1} << 40)) {
    Fail(env, "LSTM_SHAPE", "forward: T=" + std::to_string(T) + ", B=" + std::to_string(B) + " is too large");
  }
  run.x = FloatArg(env, info[0], "x", T * B * desc.input_size).Data();
  run.h0 = FloatArg(env, info[3], "h0", D * B * Hout).Data();
  run.c0 = FloatArg(env, info[4], "c0", D * B * H).Data();
  if (!info[5].IsNull() && !info[5].IsUndefined()) {
    if (!info[5].IsTypedArray() || info[5].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
      Fail(env, "LSTM_DTYPE", "lengths: expected an Int32Array or null, got " + TypeOfValue(info[5]));
    }
    Napi::Int32Array lengths = info[5].As<Napi::Int32Array>();
    if (static_cast<int64_t>(lengths.ElementLength()) != B || lengths.Data() == nullptr) {
      Fail(env, "LSTM_SHAPE", "lengths: expected " + std::to_string(B) + " entries, got " +
                                  std::to_string(lengths.ElementLength()));
    }
    const int32_t* len = lengths.Data();
    for (int64_t b = 0; b < B; ++b) {
      if (len[b] < 1 || len[b] > T) {
        Fail(env, "LSTM_SHAPE", "lengths[" + std::to_string(b) + "]: expected 1.." + std::to_string(T) + ", got " +
                                    std::to_string(len[b]));
      }
    }
    run.lengths = len;
  }
  run.y = FloatArg(env, info[6], "y", T * B * D * Hout).Data();
  run.hn = FloatArg(env, info[7], "hn", D * B * Hout).Data();
  run.cn = FloatArg(env, info[8], "cn", D * B * H).Data();
  try {
    layer_->forward(isa_, run);
  } catch (const std::bad_alloc&) {
    Fail(env, "LSTM_NATIVE", "forward: out of memory for T=" + std::to_string(T) + ", B=" + std::to_string(B));
  }
  return env.Undefined();
}

}  // namespace

NODE_API_ADDON(LstmAddon)
