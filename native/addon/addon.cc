// N-API surface only: argument checks, the Layer object, errors with stable codes.
// All numerics live in native/kernels; per-environment state lives in the Addon
// instance (no statics), so the addon loads in several worker threads at once.
#include <napi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "../kernels/isa.h"
#include "../kernels/layer.h"
#include "../kernels/pages.h"
#include "../kernels/peak.h"
#include "../kernels/threadpool.h"
#include "../kernels/train_cell.h"

#if defined(_WIN32)
#ifndef NOMINMAX
#define NOMINMAX  // windows.h would otherwise define min and max as macros, breaking std::min
#endif
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#else
#include <dlfcn.h>
#endif

namespace {

constexpr int kAbiVersion = 8;

// A forwardAsync below this much work runs on the calling thread and returns a settled
// promise: issuing one to a libuv thread (input snapshot, worker, queue, completion) took
// the event loop 14-31 us a call on this project's VM, where a forward of I=H=16, T=1
// takes 3.7 us (and of I=H=64, T=10, 0.66 MFLOP, about 10 us).
constexpr double kInlineAsyncFlops = 5e5;

// A streaming step below this much work (about 50 us on one core) runs on the calling
// thread alone when the pool's threads are asleep: waking them costs as much.
constexpr double kSoloStepFlops = 4e6;
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

// The data of a Float32Array argument of `expected` elements (a detached buffer has none).
// One engine query: napi_get_typedarray_info refuses anything but a typed array itself (a
// streaming step checks four arrays per call; the Napi::Float32Array wrapper made three).
float* FloatData(Napi::Env env, const Napi::Value& v, const char* name, int64_t expected) {
  napi_typedarray_type type = napi_int8_array;
  std::size_t length = 0;
  void* data = nullptr;
  if (napi_get_typedarray_info(env, v, &type, &length, &data, nullptr, nullptr) != napi_ok || type != napi_float32_array) {
    Fail(env, "LSTM_DTYPE", std::string(name) + ": expected a Float32Array, got " + TypeOfValue(v));
  }
  if (static_cast<int64_t>(length) != expected) {
    Fail(env, "LSTM_SHAPE", std::string(name) + ": expected " + std::to_string(expected) + " elements, got " + std::to_string(length));
  }
  if (expected > 0 && data == nullptr) Fail(env, "LSTM_SHAPE", std::string(name) + ": buffer is detached");
  return static_cast<float*>(data);
}

float* FloatData(Napi::Env env, const Napi::Value& v, const std::string& name, int64_t expected) {
  return FloatData(env, v, name.c_str(), expected);
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

// forwardAsync's copies of its inputs, recycled. A fresh copy is fresh memory, and every
// page of it faults on first write, on the calling (event-loop) thread: on this VM a fault
// costs about 13.6 us, so copying a 4 MiB input (B=32, T=128, I=256) took ~14 ms there
// and a 1 ms timer lagged 16-25 ms behind during back-to-back forwardAsync calls. The
// buffers are PageBlocks: in 4 KiB pages, even a recycled 42 MB buffer took 13-60 ms to
// copy into after a forward, against 3 ms warm (see pages.h). Idle buffers are kept up to
// kKeep of them and kKeepBytes in all.
class InputPool {
 public:
  static constexpr std::size_t kKeep = 8;
  static constexpr std::size_t kKeepBytes = std::size_t{64} << 20;

  // Room for every idle buffer up front: Give runs in a destructor and must not allocate.
  InputPool() { idle_.reserve(kKeep); }

  // An idle buffer of at least n floats (the smallest such), else a new one (throws
  // std::bad_alloc; *fresh says which).
  lstm::PageBlock Take(std::size_t n, bool* fresh) {
    *fresh = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      std::size_t best = idle_.size();
      for (std::size_t i = 0; i < idle_.size(); ++i) {
        if (idle_[i].floats() >= n && (best == idle_.size() || idle_[i].floats() < idle_[best].floats())) best = i;
      }
      if (best < idle_.size()) {
        lstm::PageBlock b = std::move(idle_[best]);
        idle_.erase(idle_.begin() + static_cast<std::ptrdiff_t>(best));
        idle_bytes_ -= b.bytes();
        return b;
      }
    }
    *fresh = true;
    return lstm::PageBlock(n);
  }

  void Give(lstm::PageBlock&& b) noexcept {
    const std::size_t bytes = b.bytes();
    if (b.floats() == 0) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (idle_.size() < kKeep && idle_bytes_ + bytes <= kKeepBytes) {
      idle_bytes_ += bytes;
      idle_.push_back(std::move(b));
    }
  }

 private:
  std::mutex mu_;
  std::vector<lstm::PageBlock> idle_;
  std::size_t idle_bytes_ = 0;
};

class LstmAddon;

// Type tags of the wrapper objects, set by their constructors: StackArg and ParseGemm
// check these instead of instanceof (which runs a Symbol.hasInstance lookup and walks the
// prototype chain: 6% of a small streaming step), and an object given a wrapper's
// prototype from JavaScript carries no tag.
constexpr napi_type_tag kLayerTag = {0x6c73746d2d6e6174, 0x4c61796572000001};
constexpr napi_type_tag kPackedTag = {0x6c73746d2d6e6174, 0x5061636b65640001};

// A layer's packed weights. Operations on layers are addon methods taking arrays of
// layers (a stack); the wrapper holds the layer by shared_ptr so an async run keeps it
// alive past dispose().
class LayerWrap : public Napi::ObjectWrap<LayerWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Layer", {InstanceMethod("dispose", &LayerWrap::Dispose), InstanceMethod("load", &LayerWrap::LoadMethod)});
  }

  LayerWrap(const Napi::CallbackInfo& info);

  const std::shared_ptr<const lstm::Layer>& layer() const { return layer_; }
  lstm::Isa isa() const { return isa_; }

 private:
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    Release(info.Env());
    return info.Env().Undefined();
  }

  // load(dirs): new weights, same configuration (after an optimizer step).
  Napi::Value LoadMethod(const Napi::CallbackInfo& info) {
    if (!layer_) Fail(info.Env(), "LSTM_DISPOSED", "load: this layer was disposed");
    Load(info.Env(), info[0]);
    return info.Env().Undefined();
  }

  void Load(Napi::Env env, const Napi::Value& dirs);

  // Native memory is reported to V8 so that dropped layers are collected under native
  // pressure, not only JS pressure.
  void Release(Napi::Env env) {
    if (layer_) Napi::MemoryManagement::AdjustExternalMemory(env, -external_bytes_);
    layer_.reset();
  }

 public:
  void Finalize(Napi::Env env) override { Release(env); }

 private:
  std::shared_ptr<const lstm::Layer> layer_;
  lstm::LayerDesc desc_;
  lstm::Isa isa_ = lstm::Isa::kScalar;
  int64_t external_bytes_ = 0;
};

// A right-hand GEMM operand packed once (training reuses weights across many products).
class PackedWrap : public Napi::ObjectWrap<PackedWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Packed", {InstanceMethod("dispose", &PackedWrap::Dispose), InstanceMethod("set", &PackedWrap::Set)});
  }

  // Packed(w: Float32Array [n*k], n, k, transposed?): W [n, k], or with transposed = true
  // its transpose Wt [k, n] (packed without transposing it first).
  PackedWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PackedWrap>(info) {
    info.This().As<Napi::Object>().TypeTag(&kPackedTag);
    Pack(info);
  }

  // set(w, n, k, transposed?): repack in place, reusing the buffer (training pools these per model).
  Napi::Value Set(const Napi::CallbackInfo& info) {
    Pack(info);
    return info.Env().Undefined();
  }

  void Pack(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const int32_t n = IntArg(env, info[1], "n", 1, std::numeric_limits<int32_t>::max());
    const int32_t k = IntArg(env, info[2], "k", 1, std::numeric_limits<int32_t>::max());
    if (int64_t{n} * k > kMaxElements) Fail(env, "LSTM_SHAPE", "Packed: n*k exceeds 2^31 elements");
    const float* w = FloatData(env, info[0], "w", int64_t{n} * k);
    bool transposed = false;
    if (info.Length() > 3 && !info[3].IsUndefined()) {
      if (!info[3].IsBoolean()) Fail(env, "LSTM_OPTION", "Packed: transposed must be a boolean");
      transposed = info[3].As<Napi::Boolean>().Value();
    }
    try {
      if (transposed) {
        lstm::pack_matrix_kn(w, k, n, &packed_);
      } else {
        lstm::pack_matrix(w, n, k, &packed_);
      }
    } catch (const std::bad_alloc&) {
      Fail(env, "LSTM_NATIVE", "Packed: out of memory");
    }
    const int64_t bytes = static_cast<int64_t>(packed_.data.capacity() * sizeof(float));
    Napi::MemoryManagement::AdjustExternalMemory(env, bytes - bytes_);
    bytes_ = bytes;
  }

  const lstm::PackedMatrix& packed() const { return packed_; }

  void Finalize(Napi::Env env) override { Release(env); }

 private:
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    Release(info.Env());
    return info.Env().Undefined();
  }

  void Release(Napi::Env env) {
    if (bytes_ == 0) return;
    Napi::MemoryManagement::AdjustExternalMemory(env, -bytes_);
    bytes_ = 0;
    packed_ = lstm::PackedMatrix();  // n = 0: gemmNT refuses a released matrix
    packed_.data.shrink_to_fit();
  }

  lstm::PackedMatrix packed_;
  int64_t bytes_ = 0;
};

// The element-wise kernels of one layer direction's BPTT. The tape's typed arrays are held
// by reference and re-checked (length, not detached) on every call.
class TrainCellWrap : public Napi::ObjectWrap<TrainCellWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "TrainCell",
                       {InstanceMethod("forward", &TrainCellWrap::Forward), InstanceMethod("backward", &TrainCellWrap::Backward),
                        InstanceMethod("reset", &TrainCellWrap::Reset)});
  }

  // TrainCell(spec, rows, tape: { z: [4], act: [4], pass: [4] | null, cPrev, c, hc })
  TrainCellWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TrainCellWrap>(info) { Init(info); }

 private:
  // reset(spec, rows, tape): rebind a pooled cell to another run.
  Napi::Value Reset(const Napi::CallbackInfo& info) {
    Init(info);
    return info.Env().Undefined();
  }

  void Init(const Napi::CallbackInfo& info);

  // The tape for rows [row0, row0 + B), every array re-checked.
  lstm::TrainStepTape Tape(Napi::Env env, int64_t row0, int64_t B) {
    const int64_t H = spec_.hidden;
    if (row0 < 0 || B < 1 || row0 + B > rows_) Fail(env, "LSTM_SHAPE", "TrainCell: rows out of range");
    const auto at = [&](Napi::ObjectReference& r, const char* name) {
      return FloatData(env, r.Value(), name, int64_t{rows_} * H) + row0 * H;
    };
    lstm::TrainStepTape t{};
    for (int g = 0; g < 4; ++g) {
      t.z[g] = at(z_[g], "tape.z");
      t.act[g] = at(act_[g], "tape.act");
      t.pass[g] = nullptr;
      if (has_pass_) {
        Napi::Uint8Array p = pass_[g].Value().As<Napi::Uint8Array>();
        if (static_cast<int64_t>(p.ElementLength()) != int64_t{rows_} * H || p.Data() == nullptr) Fail(env, "LSTM_SHAPE", "tape.pass was detached");
        t.pass[g] = p.Data() + row0 * H;
      }
    }
    t.c_prev = at(c_prev_, "tape.cPrev");
    t.c = at(c_, "tape.c");
    t.hc = at(hc_, "tape.hc");
    return t;
  }

  // forward(row0, B, gates [B*4H], cPrev [B*H], cNew [B*H], rNew [B*H])
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const int64_t H = spec_.hidden;
    const int64_t row0 = IntArg(env, info[0], "row0", 0, std::numeric_limits<int32_t>::max());
    const int B = IntArg(env, info[1], "B", 1, std::numeric_limits<int32_t>::max());
    const lstm::TrainStepTape t = Tape(env, row0, B);
    const float* gates = FloatData(env, info[2], "gates", B * 4 * H);
    const float* c_prev = FloatData(env, info[3], "cPrev", B * H);
    float* c_new = FloatData(env, info[4], "cNew", B * H);
    float* r_new = FloatData(env, info[5], "rNew", B * H);
    lstm::train_cell_forward(isa_, spec_, B, gates, c_prev, t, c_new, r_new);
    return env.Undefined();
  }

  // backward(row0, B, lengths | null, t, dr [B*H], dc [B*H], dgates [B*4H], dwci, dwcf, dwco | null)
  Napi::Value Backward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const int64_t H = spec_.hidden;
    const int64_t row0 = IntArg(env, info[0], "row0", 0, std::numeric_limits<int32_t>::max());
    const int B = IntArg(env, info[1], "B", 1, std::numeric_limits<int32_t>::max());
    const lstm::TrainStepTape tape = Tape(env, row0, B);
    const int t = IntArg(env, info[3], "t", 0, std::numeric_limits<int32_t>::max());
    const int32_t* lengths = nullptr;
    if (!info[2].IsNull() && !info[2].IsUndefined()) {
      if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
          static_cast<int64_t>(info[2].As<Napi::Int32Array>().ElementLength()) != B) {
        Fail(env, "LSTM_DTYPE", "lengths: expected an Int32Array of B entries");
      }
      lengths = info[2].As<Napi::Int32Array>().Data();
    }
    const float* dr = FloatData(env, info[4], "dr", B * H);
    float* dc = FloatData(env, info[5], "dc", B * H);
    float* dgates = FloatData(env, info[6], "dgates", B * 4 * H);
    float* dw[3] = {nullptr, nullptr, nullptr};
    if (spec_.wci) {
      for (int i = 0; i < 3; ++i) dw[i] = FloatData(env, info[7 + i], "dwPeephole", H);
    }
    lstm::train_cell_backward(isa_, spec_, B, lengths, t, tape, dr, dc, dgates, dw[0], dw[1], dw[2]);
    return env.Undefined();
  }

  lstm::TrainCellSpec spec_;
  lstm::Isa isa_ = lstm::Isa::kScalar;
  std::vector<std::vector<float>> peep_;
  int32_t rows_ = 0;
  bool has_pass_ = false;
  Napi::ObjectReference z_[4], act_[4], pass_[4], c_prev_, c_, hc_;
};

// The arguments gemmNT and gemmTN share: (M, a, packed, c, accumulate, isa, threads), with
// a [M, k] for gemmNT and its transpose [k, M] for gemmTN (the same element count).
struct GemmArgs {
  int32_t M;
  const lstm::PackedMatrix* w;
  const float* a;
  float* c;
  bool accumulate;
  lstm::Isa isa;
  int threads;
};

// Threads for a GEMM: at most one per `units` of work it splits, and one per 200 kFLOP
// (fewer when the product is too small to repay a thread), and no more than parallel_run
// will start, so per-thread scratch and slice sizes are those of the threads that run.
int GemmThreads(const GemmArgs& g, int units) {
  const double flops = 2.0 * g.M * g.w->n * g.w->k;
  return std::max(1, std::min({g.threads, lstm::hardware_threads(), units, static_cast<int>(flops / 200000) + 1}));
}

// The layers of one call, checked: live, chained (layer l+1 reads layer l's output) and
// held by shared_ptr for as long as the call runs.
struct Stack {
  std::vector<std::shared_ptr<const lstm::Layer>> owned;
  std::vector<const lstm::Layer*> layers;
  lstm::Isa isa = lstm::Isa::kScalar;
  int64_t input_size = 0;
  int64_t out_width = 0;    // D * Hout of the last layer
  int64_t h_per_batch = 0;  // sum over layers of D * Hout
  int64_t c_per_batch = 0;  // sum over layers of D * H
  int64_t widest = 0;       // the widest activation row any layer reads or writes
};

// A stack bound once for streaming (the native engine keeps one per model): its step()
// skips walking and type-checking the layers array, a quarter of the native time of a
// small step. The layers are referenced weakly; one collected, disposed or reloaded since
// the last step is noticed (a pointer compare per layer) and the stack checked again.
class StepperWrap : public Napi::ObjectWrap<StepperWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Stepper", {InstanceMethod("step", &StepperWrap::StepMethod)});
  }

  // Stepper(layers)
  StepperWrap(const Napi::CallbackInfo& info);

 private:
  // step(x, B, h, c, out, threads): as the addon's step, on the bound layers.
  Napi::Value StepMethod(const Napi::CallbackInfo& info);

  // The stack of wraps_ as they are now (their layers not owned: see Bind).
  void Bind(Napi::Env env);

  // Weak: the model's engine keeps its layers alive while it steps them; a Stepper must not
  // keep a dropped model's layers (and weights) alive longer, only notice they are gone.
  std::vector<Napi::ObjectReference> refs_;
  std::vector<LayerWrap*> wraps_;
  Stack stack_;
};

// Keeps this library loaded for the life of the process. Its thread pool is process-wide and
// its threads are never joined; Node unloads an addon when the last environment that loaded
// it goes away (a worker_thread that was its only user ending), and a pool thread still
// spinning after a job, or woken later, would then run unmapped code (a forwardAsync in
// flight when such a worker was terminated crashed the process that way).
void PinLibrary() {
#if defined(_WIN32)
  HMODULE self = nullptr;
  GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_PIN,
                     reinterpret_cast<LPCWSTR>(&PinLibrary), &self);
#else
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&PinLibrary), &info) != 0 && info.dli_fname != nullptr) {
    // A reference of our own, never released; RTLD_NODELETE keeps it past any dlclose.
    (void)dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
  }
#endif
}

class LstmAddon : public Napi::Addon<LstmAddon> {
 public:
  LstmAddon(Napi::Env env, Napi::Object exports) : best_(lstm::best_isa()) {
    static std::once_flag pinned;
    std::call_once(pinned, PinLibrary);
    Napi::Function layer_class = LayerWrap::Define(env);
    Napi::Function packed_class = PackedWrap::Define(env);
    DefineAddon(exports, {
                             InstanceValue("abiVersion", Napi::Number::New(env, kAbiVersion), napi_enumerable),
                             InstanceMethod("isa", &LstmAddon::IsaName, napi_enumerable),
                             InstanceMethod("measurePeak", &LstmAddon::MeasurePeak, napi_enumerable),
                             InstanceMethod("forward", &LstmAddon::Forward, napi_enumerable),
                             InstanceMethod("forwardAsync", &LstmAddon::ForwardAsync, napi_enumerable),
                             InstanceMethod("step", &LstmAddon::Step, napi_enumerable),
                             InstanceMethod("gemmNT", &LstmAddon::GemmNT, napi_enumerable),
                             InstanceMethod("gemmTN", &LstmAddon::GemmTN, napi_enumerable),
                             InstanceMethod("columnSums", &LstmAddon::ColumnSums, napi_enumerable),
                             InstanceValue("Packed", packed_class, napi_enumerable),
                             InstanceValue("TrainCell", TrainCellWrap::Define(env), napi_enumerable),
                             InstanceValue("Layer", layer_class, napi_enumerable),
                             InstanceValue("Stepper", StepperWrap::Define(env), napi_enumerable),
                         });
  }

  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value ForwardAsync(const Napi::CallbackInfo& info);
  Napi::Value Step(const Napi::CallbackInfo& info);
  Napi::Value StepWith(const Napi::CallbackInfo& info, std::size_t at, const Stack& st);
  Napi::Value GemmNT(const Napi::CallbackInfo& info);
  Napi::Value GemmTN(const Napi::CallbackInfo& info);
  GemmArgs ParseGemm(const Napi::CallbackInfo& info, const std::string& fn, const char* a_name) const;
  // columnSums(src, rows, cols, dst): dst [cols] = sums of the columns of src [rows, cols]
  Napi::Value ColumnSums(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const int32_t rows = IntArg(env, info[1], "rows", 1, std::numeric_limits<int32_t>::max());
    const int32_t cols = IntArg(env, info[2], "cols", 1, std::numeric_limits<int32_t>::max());
    if (int64_t{rows} * cols > kMaxElements) Fail(env, "LSTM_SHAPE", "columnSums: rows * cols exceeds 2^31");
    const float* src = FloatData(env, info[0], "src", int64_t{rows} * cols);
    float* dst = FloatData(env, info[3], "dst", cols);
    try {
      lstm::column_sums(src, rows, cols, dst);
    } catch (const std::bad_alloc&) {
      Fail(env, "LSTM_NATIVE", "columnSums: out of memory");
    }
    return env.Undefined();
  }

  // The ISA to run for a requested name ('' = the best this CPU has). A request for an
  // ISA the CPU lacks steps down within its family (avx512 to avx2 to scalar; neon or
  // simd128 to scalar), never to one the request does not allow: neon on x86-64 is scalar.
  lstm::Isa Resolve(Napi::Env env, const Napi::Value& requested) const {
    if (requested.IsUndefined() || requested.IsNull()) return best_;
    if (!requested.IsString()) Fail(env, "LSTM_OPTION", "LSTM_ISA: expected a string");
    const std::string want = requested.As<Napi::String>().Utf8Value();
    if (want.empty()) return best_;
    lstm::Isa isa;
    if (!lstm::parse_isa(want.c_str(), &isa)) {
      Fail(env, "LSTM_OPTION", "LSTM_ISA: expected one of avx512, avx2, neon, simd128, scalar, got '" + want + "'");
    }
    while (!lstm::isa_supported(isa)) isa = isa == lstm::Isa::kAvx512 ? lstm::Isa::kAvx2 : lstm::Isa::kScalar;
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



  const lstm::Isa best_;  // detected once per environment
  std::shared_ptr<InputPool> inputs_ = std::make_shared<InputPool>();
  // forward and step run on the environment's own thread, one call at a time, so they
  // share one Workspace. step keeps it whatever its size (a step allocates nothing); after
  // a forward it is kept while it is small, so a small model's forward allocates no
  // scratch, and a larger one is released (its allocation is small next to that forward's
  // work). Tiny forwards (B=1, T=1, H=32) ran 1.65x faster with it kept. A stack's
  // intermediate layer outputs (T x B rows each) are always freed: glibc hands that memory
  // to the next call's output array, which then does not fault. The rest (gate chunk,
  // states, pack) is kept up to 4 MiB: S3's 1.3 MiB had been refaulted on every call.
  static constexpr std::size_t kKeepSyncBytes = std::size_t{4} << 20;
  lstm::Workspace sync_ws_;
  void ReleaseLargeSyncWorkspace() {
    lstm::AlignedFloats().swap(sync_ws_.y[0]);
    lstm::AlignedFloats().swap(sync_ws_.y[1]);
    if (sync_ws_.bytes() > kKeepSyncBytes) sync_ws_ = lstm::Workspace();
  }
  // forward_stack in sync_ws_; out of memory drops it and throws LSTM_NATIVE naming `what`.
  void RunSync(Napi::Env env, const char* what, const std::vector<const lstm::Layer*>& layers, lstm::Isa isa,
               const lstm::Threading& threading, const lstm::StackRun& run);
  std::chrono::steady_clock::time_point last_step_{};  // when step() last ran
};

LayerWrap::LayerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<LayerWrap>(info) {
  Napi::Env env = info.Env();
  info.This().As<Napi::Object>().TypeTag(&kLayerTag);
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
  Napi::Value reverse_acts = d.Get("reverseActs");
  if (reverse_acts.IsObject()) {
    if (desc.num_directions != 2) Fail(env, "LSTM_OPTION", "desc.reverseActs: only a bidirectional layer has a reverse direction");
    Napi::Object r = reverse_acts.As<Napi::Object>();
    desc.reverse_acts = true;
    desc.gate_r = ActivationArg(env, r, "gate");
    desc.cell_r = ActivationArg(env, r, "cell");
    desc.hidden_r = ActivationArg(env, r, "hidden");
  } else if (!reverse_acts.IsNull() && !reverse_acts.IsUndefined()) {
    Fail(env, "LSTM_OPTION", "desc.reverseActs: expected null or an object of three activations");
  }
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

  desc_ = desc;
  Load(env, info[1]);
}

// Pack a new set of weights for this layer's configuration and swap it in: calls in
// flight keep the weights they started with (they hold the old shared_ptr).
void LayerWrap::Load(Napi::Env env, const Napi::Value& dirsValue) {
  const lstm::LayerDesc& desc = desc_;
  const int64_t H = desc.hidden_size;
  const int64_t Hout = desc.out_size();
  if (!dirsValue.IsArray()) Fail(env, "LSTM_WEIGHTS", "dirs: expected an array of direction weights");
  Napi::Array dirs = dirsValue.As<Napi::Array>();
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
    v.w_ih = FloatData(env, o.Get("wIh"), at + "wIh", 4 * H * desc.input_size);
    v.w_hh = FloatData(env, o.Get("wHh"), at + "wHh", 4 * H * Hout);
    if (desc.bias) {
      v.b_ih = FloatData(env, o.Get("bIh"), at + "bIh", 4 * H);
      v.b_hh = FloatData(env, o.Get("bHh"), at + "bHh", 4 * H);
    }
    if (desc.proj_size > 0) v.w_hr = FloatData(env, o.Get("wHr"), at + "wHr", Hout * H);
    if (desc.peephole == lstm::kPeepholeDiagonal) {
      v.w_ci = FloatData(env, o.Get("wCi"), at + "wCi", H);
      v.w_cf = FloatData(env, o.Get("wCf"), at + "wCf", H);
      v.w_co = FloatData(env, o.Get("wCo"), at + "wCo", H);
    } else if (desc.peephole == lstm::kPeepholeFull) {
      v.w_ch = FloatData(env, o.Get("wCh"), at + "wCh", 4 * H * H);
    }
  }
  std::shared_ptr<const lstm::Layer> fresh;
  try {
    fresh = std::make_shared<const lstm::Layer>(desc, views, lstm::packed_group(isa_));
  } catch (const std::bad_alloc&) {
    Fail(env, "LSTM_NATIVE", "out of memory while packing weights");
  }
  Release(env);
  layer_ = std::move(fresh);
  external_bytes_ = static_cast<int64_t>(layer_->held_bytes());
  Napi::MemoryManagement::AdjustExternalMemory(env, external_bytes_);
}

// The stack of these layer wrappers, checked: live and chained.
Stack StackOf(Napi::Env env, const std::vector<LayerWrap*>& wraps) {
  Stack st;
  st.owned.reserve(wraps.size());
  st.layers.reserve(wraps.size());
  for (std::size_t i = 0; i < wraps.size(); ++i) {
    const LayerWrap* wrap = wraps[i];
    if (!wrap->layer()) Fail(env, "LSTM_DISPOSED", "layers[" + std::to_string(i) + "] was disposed");
    const lstm::LayerDesc& d = wrap->layer()->desc();
    if (i == 0) {
      st.isa = wrap->isa();
      st.input_size = d.input_size;
    } else if (d.input_size != st.out_width) {
      Fail(env, "LSTM_OPTION", "layers[" + std::to_string(i) + "]: input size " + std::to_string(d.input_size) +
                                   " does not match the previous layer's output width " + std::to_string(st.out_width));
    }
    st.out_width = static_cast<int64_t>(d.num_directions) * d.out_size();
    st.h_per_batch += st.out_width;
    st.c_per_batch += static_cast<int64_t>(d.num_directions) * d.hidden_size;
    st.widest = std::max<int64_t>({st.widest, d.input_size, st.out_width, 64 * ((d.hidden_size + 15) / 16)});
    st.owned.push_back(wrap->layer());
    st.layers.push_back(wrap->layer().get());
  }
  return st;
}

// The wrappers of a JS array of layers (type-tagged: nothing else is unwrapped), and with
// `objects` the objects they wrap.
std::vector<LayerWrap*> LayerWraps(Napi::Env env, const Napi::Value& v, std::vector<Napi::Object>* objects = nullptr) {
  if (!v.IsArray() || v.As<Napi::Array>().Length() == 0) Fail(env, "LSTM_OPTION", "layers: expected a non-empty array of layers");
  Napi::Array arr = v.As<Napi::Array>();
  std::vector<LayerWrap*> wraps;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value item = arr.Get(i);
    if (!item.IsObject() || !item.As<Napi::Object>().CheckTypeTag(&kLayerTag)) {
      Fail(env, "LSTM_OPTION", "layers[" + std::to_string(i) + "]: expected a Layer");
    }
    wraps.push_back(LayerWrap::Unwrap(item.As<Napi::Object>()));
    if (objects != nullptr) objects->push_back(item.As<Napi::Object>());
  }
  return wraps;
}

Stack StackArg(Napi::Env env, const Napi::Value& v) { return StackOf(env, LayerWraps(env, v)); }

void CheckSteppable(Napi::Env env, const Stack& st) {
  for (const lstm::Layer* layer : st.layers) {
    if (layer->desc().num_directions != 1) Fail(env, "LSTM_OPTION", "step: bidirectional layers cannot be stepped");
  }
}

StepperWrap::StepperWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<StepperWrap>(info) {
  Napi::Env env = info.Env();
  std::vector<Napi::Object> objects;
  wraps_ = LayerWraps(env, info[0], &objects);
  Bind(env);
  CheckSteppable(env, stack_);
  for (const Napi::Object& o : objects) refs_.push_back(Napi::Weak(o));
}

void StepperWrap::Bind(Napi::Env env) {
  stack_ = StackOf(env, wraps_);
  // A step runs on this thread, where nothing can dispose a layer until it returns, so the
  // stack need not own its layers; owning them would keep a disposed model's weights alive
  // until the garbage collector found this object.
  stack_.owned.clear();
}

lstm::Threading ThreadsArg(Napi::Env env, const Napi::Value& v) {
  lstm::Threading t;
  t.threads = IntArg(env, v, "threads", 1, 1024);
  return t;
}

// Sizes of a run must keep every buffer addressable; the facade checks the same first.
void CheckRunSize(Napi::Env env, const Stack& st, int64_t T, int64_t B) {
  if (T * B > kMaxElements || T * B * st.widest > kMaxElements) {
    Fail(env, "LSTM_SHAPE", "T=" + std::to_string(T) + ", B=" + std::to_string(B) + " makes buffers of more than 2^31 elements");
  }
}

const int32_t* LengthsArg(Napi::Env env, const Napi::Value& v, int64_t T, int64_t B) {
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    Fail(env, "LSTM_DTYPE", "lengths: expected an Int32Array or null, got " + TypeOfValue(v));
  }
  Napi::Int32Array lengths = v.As<Napi::Int32Array>();
  if (static_cast<int64_t>(lengths.ElementLength()) != B || lengths.Data() == nullptr) {
    Fail(env, "LSTM_SHAPE", "lengths: expected " + std::to_string(B) + " entries, got " + std::to_string(lengths.ElementLength()));
  }
  const int32_t* len = lengths.Data();
  for (int64_t b = 0; b < B; ++b) {
    if (len[b] < 1 || len[b] > T) {
      Fail(env, "LSTM_SHAPE", "lengths[" + std::to_string(b) + "]: expected 1.." + std::to_string(T) + ", got " + std::to_string(len[b]));
    }
  }
  return len;
}

[[noreturn]] void OutOfMemory(Napi::Env env, const char* what) { Fail(env, "LSTM_NATIVE", std::string(what) + ": out of memory"); }

// A forward's output arrays are fresh from V8, their pages often untouched: mapped in one
// call each rather than by a fault per page on the first writes (pages.h). Through the
// package on the benchmark VM, separate processes alternating: system time per call S3
// 10-12.5 -> 3.5-4 ms, S1 0.30 -> 0.09 ms (wall time within the machine's noise).
void PopulateOutputs(const lstm::StackRun& run, std::size_t y_floats, std::size_t hn_floats, std::size_t cn_floats) {
  lstm::populate_pages(run.y, y_floats * sizeof(float));
  lstm::populate_pages(run.hn, hn_floats * sizeof(float));
  lstm::populate_pages(run.cn, cn_floats * sizeof(float));
}

// forwardAsync's work: inputs copied when the call is made (JS may detach or reuse its
// buffers meanwhile), outputs written into arrays JS cannot see until the promise resolves.
class ForwardWorker : public Napi::AsyncWorker {
 public:
  ForwardWorker(Napi::Env env, Stack stack, lstm::Threading threading, int T, int B, std::shared_ptr<InputPool> inputs)
      : Napi::AsyncWorker(env, "lstm-native:forwardAsync"), deferred_(Napi::Promise::Deferred::New(env)),
        stack_(std::move(stack)), threading_(threading), T_(T), B_(B), inputs_(std::move(inputs)) {}

  ~ForwardWorker() override { inputs_->Give(std::move(snapshot_)); }

  // Copies x [x_floats], h0 and c0 into one recycled block, each from a 64-byte boundary
  // (throws std::bad_alloc). On the calling thread, since JS may detach or refill its
  // arrays once the call returns; from 4 MiB up the pool's threads help if no other job
  // holds them. (Each core walks its own share of the pages: on the VM of pages.h, once the
  // process had freed other memory, a 42 MB copy took 11-44 ms on two cores and 58-104 ms
  // on one.) A new block's pages are mapped by the same threads, a system call per share.
  void Snapshot(const float* x, std::size_t x_floats, const float* h0, std::size_t h_floats, const float* c0,
                std::size_t c_floats) {
    constexpr std::size_t kLine = 16;  // floats
    const auto up = [](std::size_t n) { return (n + kLine - 1) / kLine * kLine; };
    struct Part {
      const float* src;
      std::size_t at, n;
    };
    const Part parts[3] = {{x, 0, x_floats}, {h0, up(x_floats), h_floats}, {c0, up(x_floats) + up(h_floats), c_floats}};
    const std::size_t total = up(x_floats) + up(h_floats) + c_floats;
    bool fresh = false;
    snapshot_ = inputs_->Take(total, &fresh);
    float* dst = snapshot_.data();
    x_ = dst;
    h0_ = dst + parts[1].at;
    c0_ = dst + parts[2].at;
    const auto share = [&](const lstm::ParallelContext& ctx) {
      const std::size_t lo = total * static_cast<std::size_t>(ctx.tid) / static_cast<std::size_t>(ctx.nth);
      const std::size_t hi = total * static_cast<std::size_t>(ctx.tid + 1) / static_cast<std::size_t>(ctx.nth);
      if (fresh) lstm::populate_pages(dst + lo, (hi - lo) * sizeof(float));
      for (const Part& p : parts) {
        const std::size_t a = std::max(lo, p.at), b = std::min(hi, p.at + p.n);
        if (a < b) std::memcpy(dst + a, p.src + (a - p.at), (b - a) * sizeof(float));
      }
    };
    constexpr std::size_t kShareFrom = std::size_t{1} << 20;  // floats: 4 MiB
    const int nth = total >= kShareFrom ? std::min(threading_.threads, 4) : 1;
    if (!lstm::parallel_run_if_idle(nth, share)) share(lstm::ParallelContext{0, 1, nullptr});
  }

  Napi::Promise Promise() const { return deferred_.Promise(); }

  // Runs settle(env) and drops the C++ exception node-addon-api makes of a failed call. In a
  // live environment the JS exception behind it stays pending and Node reports it as usual;
  // in one being torn down there is none to report (or only the termination itself, which
  // napi_is_exception_pending cannot tell apart), and rethrowing would abort the process.
  template <typename F>
  void Settle(F settle) {
    try {
      settle(Env());
    } catch (const Napi::Error&) {
    }
  }

  std::vector<int32_t> lengths;
  bool has_lengths = false;
  Napi::Reference<Napi::Float32Array> y, hn, cn;
  float* y_data = nullptr;
  float* hn_data = nullptr;
  float* cn_data = nullptr;
  std::size_t y_floats_ = 0, hn_floats_ = 0, cn_floats_ = 0;

 protected:
  void Execute() override {
    try {
      const lstm::StackRun run =
          lstm::StackRun::forward(x_, T_, B_, h0_, c0_, has_lengths ? lengths.data() : nullptr, y_data, hn_data, cn_data);
      PopulateOutputs(run, y_floats_, hn_floats_, cn_floats_);  // here, off the event loop
      lstm::Workspace ws;
      lstm::forward_stack(stack_.layers, stack_.isa, threading_, run, &ws);
    } catch (const std::bad_alloc&) {
      SetError("forwardAsync: out of memory");
    }
  }

  // Both run on the event loop when the work is done, or while the environment is torn down
  // (a worker_thread terminated, or Node exiting, with the call in flight): then no JS may
  // run, every call into it fails, and nobody awaits the promise. node-addon-api would turn
  // that failure into an exception it cannot throw into JS, and the process would abort.
  void OnOK() override {
    Settle([this](Napi::Env env) {
      Napi::Array out = Napi::Array::New(env, 3);
      out.Set(0u, y.Value());
      out.Set(1u, hn.Value());
      out.Set(2u, cn.Value());
      deferred_.Resolve(out);
    });
  }

  void OnError(const Napi::Error& e) override {
    const std::string message = e.Message();
    Settle([this, &message](Napi::Env env) {
      Napi::Error err = Napi::Error::New(env, message);
      err.Set("code", Napi::String::New(env, "LSTM_NATIVE"));
      deferred_.Reject(err.Value());
    });
  }

 private:
  Napi::Promise::Deferred deferred_;
  Stack stack_;
  lstm::Threading threading_;
  int T_;
  int B_;
  std::shared_ptr<InputPool> inputs_;
  lstm::PageBlock snapshot_;  // x, h0 and c0 (Snapshot)
  const float* x_ = nullptr;
  const float* h0_ = nullptr;
  const float* c0_ = nullptr;
};

}  // namespace

void TrainCellWrap::Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 3 || !info[0].IsObject() || !info[2].IsObject()) Fail(env, "LSTM_OPTION", "TrainCell(spec, rows, tape)");
  lstm::TrainCellSpec spec;
  std::vector<std::vector<float>> peep;
  Napi::Object o = info[0].As<Napi::Object>();
  spec.hidden = IntArg(env, o.Get("hiddenSize"), "hiddenSize", 1, 1 << 24);
  spec.gate = ActivationArg(env, o, "gate");
  spec.cell = ActivationArg(env, o, "cell");
  spec.out = ActivationArg(env, o, "hidden");
  Napi::Value clip = o.Get("clip");
  if (!clip.IsNumber() || !(clip.As<Napi::Number>().DoubleValue() >= 0)) Fail(env, "LSTM_OPTION", "clip: expected a number >= 0");
  spec.clip = clip.As<Napi::Number>().FloatValue();
  spec.coupled = BoolArg(env, o, "coupled");
  const lstm::Isa isa = env.GetInstanceData<LstmAddon>()->Resolve(env, o.Get("isa"));
  const int64_t H = spec.hidden;
  for (const char* key : {"wCi", "wCf", "wCo"}) {
    Napi::Value v = o.Get(key);
    if (v.IsUndefined() || v.IsNull()) continue;
    const float* a = FloatData(env, v, key, H);
    peep.emplace_back(a, a + H);
  }
  if (!peep.empty() && peep.size() != 3) Fail(env, "LSTM_WEIGHTS", "TrainCell: diagonal peepholes need wCi, wCf and wCo");
  const int32_t rows = IntArg(env, info[1], "rows", 1, std::numeric_limits<int32_t>::max());
  if (int64_t{rows} * H > kMaxElements) Fail(env, "LSTM_SHAPE", "TrainCell: rows * H exceeds 2^31");
  Napi::Object tape = info[2].As<Napi::Object>();
  Napi::ObjectReference z[4], act[4], pass_refs[4], c_prev, c, hc;
  const auto ref = [&](const Napi::Value& v, const char* name) {
    FloatData(env, v, name, int64_t{rows} * H);
    return Napi::Persistent(v.As<Napi::Object>());
  };
  for (int g = 0; g < 4; ++g) {
    Napi::Value zs = tape.Get("z");
    Napi::Value as = tape.Get("act");
    if (!zs.IsArray() || !as.IsArray()) Fail(env, "LSTM_OPTION", "tape.z and tape.act must be arrays");
    z[g] = ref(zs.As<Napi::Array>().Get(g), "tape.z");
    act[g] = ref(as.As<Napi::Array>().Get(g), "tape.act");
  }
  Napi::Value pass = tape.Get("pass");
  const bool has_pass = !pass.IsNull() && !pass.IsUndefined();
  if (has_pass != (spec.clip > 0.f)) Fail(env, "LSTM_OPTION", "TrainCell: pass masks go with clip > 0");
  if (has_pass) {
    if (!pass.IsArray()) Fail(env, "LSTM_OPTION", "tape.pass must be an array");
    for (int g = 0; g < 4; ++g) {
      Napi::Value v = pass.As<Napi::Array>().Get(g);
      if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array ||
          static_cast<int64_t>(v.As<Napi::Uint8Array>().ElementLength()) != int64_t{rows} * H) {
        Fail(env, "LSTM_DTYPE", "tape.pass: expected Uint8Arrays of rows * H");
      }
      pass_refs[g] = Napi::Persistent(v.As<Napi::Object>());
    }
  }
  c_prev = ref(tape.Get("cPrev"), "tape.cPrev");
  c = ref(tape.Get("c"), "tape.c");
  hc = ref(tape.Get("hc"), "tape.hc");
  // Everything checked: commit.
  peep_ = std::move(peep);
  spec_ = spec;
  isa_ = isa;
  if (!peep_.empty()) {
    spec_.wci = peep_[0].data();
    spec_.wcf = peep_[1].data();
    spec_.wco = peep_[2].data();
  }
  rows_ = rows;
  has_pass_ = has_pass;
  for (int g = 0; g < 4; ++g) {
    z_[g] = std::move(z[g]);
    act_[g] = std::move(act[g]);
    pass_[g] = std::move(pass_refs[g]);
  }
  c_prev_ = std::move(c_prev);
  c_ = std::move(c);
  hc_ = std::move(hc);
}

void LstmAddon::RunSync(Napi::Env env, const char* what, const std::vector<const lstm::Layer*>& layers, lstm::Isa isa,
                        const lstm::Threading& threading, const lstm::StackRun& run) {
  try {
    lstm::forward_stack(layers, isa, threading, run, &sync_ws_);
  } catch (const std::bad_alloc&) {
    sync_ws_ = lstm::Workspace();
    OutOfMemory(env, what);
  }
}

// forward(layers, x, T, B, h0, c0, lengths|null, y, hn, cn, threads): the whole stack, in place.
Napi::Value LstmAddon::Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 11) Fail(env, "LSTM_OPTION", "forward: expected 11 arguments");
  Stack st = StackArg(env, info[0]);
  const int64_t T = IntArg(env, info[2], "T", 1, std::numeric_limits<int32_t>::max());
  const int64_t B = IntArg(env, info[3], "B", 1, std::numeric_limits<int32_t>::max());
  CheckRunSize(env, st, T, B);
  // Checked in argument order, so the first bad one is the one reported.
  const float* x = FloatData(env, info[1], "x", T * B * st.input_size);
  const float* h0 = FloatData(env, info[4], "h0", B * st.h_per_batch);
  const float* c0 = FloatData(env, info[5], "c0", B * st.c_per_batch);
  const int32_t* lengths = LengthsArg(env, info[6], T, B);
  float* y = FloatData(env, info[7], "y", T * B * st.out_width);
  float* hn = FloatData(env, info[8], "hn", B * st.h_per_batch);
  float* cn = FloatData(env, info[9], "cn", B * st.c_per_batch);
  const lstm::StackRun run =
      lstm::StackRun::forward(x, static_cast<int>(T), static_cast<int>(B), h0, c0, lengths, y, hn, cn);
  const lstm::Threading threading = ThreadsArg(env, info[10]);
  PopulateOutputs(run, static_cast<std::size_t>(T * B * st.out_width), static_cast<std::size_t>(B * st.h_per_batch),
                  static_cast<std::size_t>(B * st.c_per_batch));
  RunSync(env, "forward", st.layers, st.isa, threading, run);
  ReleaseLargeSyncWorkspace();
  return env.Undefined();
}

// forwardAsync(layers, x, T, B, h0, c0, lengths|null, threads): Promise<[y, hn, cn]>.
Napi::Value LstmAddon::ForwardAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 8) Fail(env, "LSTM_OPTION", "forwardAsync: expected 8 arguments");
  Stack st = StackArg(env, info[0]);
  const int T = IntArg(env, info[2], "T", 1, std::numeric_limits<int32_t>::max());
  const int B = IntArg(env, info[3], "B", 1, std::numeric_limits<int32_t>::max());
  CheckRunSize(env, st, T, B);
  const int64_t x_floats = int64_t{T} * B * st.input_size, h_floats = B * st.h_per_batch, c_floats = B * st.c_per_batch;
  const float* x = FloatData(env, info[1], "x", x_floats);
  const float* h0 = FloatData(env, info[4], "h0", h_floats);
  const float* c0 = FloatData(env, info[5], "c0", c_floats);
  const int32_t* lengths = LengthsArg(env, info[6], T, B);
  const lstm::Threading threading = ThreadsArg(env, info[7]);
  Napi::Float32Array y = Napi::Float32Array::New(env, static_cast<size_t>(int64_t{T} * B * st.out_width));
  Napi::Float32Array hn = Napi::Float32Array::New(env, static_cast<size_t>(B * st.h_per_batch));
  Napi::Float32Array cn = Napi::Float32Array::New(env, static_cast<size_t>(B * st.c_per_batch));
  if (lstm::stack_flops(st.layers, T, B) < kInlineAsyncFlops) {
    // Less work than handing it to a libuv thread costs this thread: run it here, and
    // return a settled promise.
    RunSync(env, "forwardAsync", st.layers, st.isa, threading,
            lstm::StackRun::forward(x, T, B, h0, c0, lengths, y.Data(), hn.Data(), cn.Data()));
    ReleaseLargeSyncWorkspace();
    Napi::Array out = Napi::Array::New(env, 3);
    out.Set(0u, y);
    out.Set(1u, hn);
    out.Set(2u, cn);
    Napi::Promise::Deferred settled = Napi::Promise::Deferred::New(env);
    settled.Resolve(out);
    return settled.Promise();
  }
  auto* worker = new ForwardWorker(env, std::move(st), threading, T, B, inputs_);
  try {
    worker->Snapshot(x, static_cast<std::size_t>(x_floats), h0, static_cast<std::size_t>(h_floats), c0,
                     static_cast<std::size_t>(c_floats));
    if (lengths != nullptr) {
      worker->lengths.assign(lengths, lengths + B);
      worker->has_lengths = true;
    }
  } catch (const std::bad_alloc&) {
    delete worker;
    OutOfMemory(env, "forwardAsync");
  }
  worker->y = Napi::Reference<Napi::Float32Array>::New(y, 1);
  worker->hn = Napi::Reference<Napi::Float32Array>::New(hn, 1);
  worker->cn = Napi::Reference<Napi::Float32Array>::New(cn, 1);
  worker->y_data = y.Data();
  worker->hn_data = hn.Data();
  worker->cn_data = cn.Data();
  worker->y_floats_ = y.ElementLength();
  worker->hn_floats_ = hn.ElementLength();
  worker->cn_floats_ = cn.ElementLength();
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// step(layers, x, B, h, c, out, threads): one time step of a unidirectional stack;
// h [L, B, Hout] and c [L, B, H] are updated in place, out [B, Hout] receives the top h.
// Reuses this environment's workspace: no allocation once warm. (A Stepper runs the same
// on layers bound once.)
Napi::Value LstmAddon::Step(const Napi::CallbackInfo& info) {
  if (info.Length() != 7) Fail(info.Env(), "LSTM_OPTION", "step: expected 7 arguments");
  const Stack st = StackArg(info.Env(), info[0]);
  CheckSteppable(info.Env(), st);
  return StepWith(info, 1, st);
}

// A step's arguments from info[at]: x, B, h, c, out, threads.
Napi::Value LstmAddon::StepWith(const Napi::CallbackInfo& info, std::size_t at, const Stack& st) {
  Napi::Env env = info.Env();
  const int B = IntArg(env, info[at + 1], "B", 1, std::numeric_limits<int32_t>::max());
  CheckRunSize(env, st, 1, B);
  const int64_t x_n = B * st.input_size, h_n = B * st.h_per_batch, c_n = B * st.c_per_batch, out_n = B * st.out_width;
  const float* x = FloatData(env, info[at], "x", x_n);
  float* h = FloatData(env, info[at + 2], "h", h_n);
  float* c = FloatData(env, info[at + 3], "c", c_n);
  float* out = FloatData(env, info[at + 4], "out", out_n);
  const lstm::StackRun run = lstm::StackRun::step(x, B, h, c, out);
  // h and c are read and written in place, out written while x is still read (by another
  // of the pool's threads): out may not overlap x, h or c, nor h overlap c. (x may overlap
  // h or c: the output fed back as the next input; the layer then keeps its last barrier.)
  if (lstm::overlaps(out, out_n, x, x_n) || lstm::overlaps(out, out_n, h, h_n) || lstm::overlaps(out, out_n, c, c_n)) {
    Fail(env, "LSTM_SHAPE", "out: must not share memory with x or the state");
  }
  if (lstm::overlaps(h, h_n, c, c_n)) Fail(env, "LSTM_SHAPE", "state.h and state.c must not share memory");
  lstm::Threading threading = ThreadsArg(env, info[at + 5]);
  // A small step whose helper threads have gone to sleep runs alone: waking them costs
  // more than the step (about 0.4 ms measured on this project's VM, for a 40 us step).
  // When steps arrive densely (the previous one under 1 ms ago) the helpers are woken
  // after this one, to spin for the next; sparse streams never pay for a wake-up. Any
  // thread count gives the same bits.
  const auto now = std::chrono::steady_clock::now();
  const bool dense = now - last_step_ < std::chrono::milliseconds(1);
  last_step_ = now;
  bool wake_after = false;
  if (threading.threads > 1 && lstm::stack_flops(st.layers, 1, B) < kSoloStepFlops && lstm::workers_asleep()) {
    threading.threads = 1;
    wake_after = dense;
  }
  RunSync(env, "step", st.layers, st.isa, threading, run);
  if (wake_after) lstm::wake_workers();
  return env.Undefined();
}

Napi::Value StepperWrap::StepMethod(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 6) Fail(env, "LSTM_OPTION", "step: expected 6 arguments");
  for (std::size_t i = 0; i < wraps_.size(); ++i) {
    // A layer object collected since (its wrapper freed with it) is as good as disposed.
    if (refs_[i].Value().IsEmpty()) Fail(env, "LSTM_DISPOSED", "layers[" + std::to_string(i) + "] was disposed");
    if (wraps_[i]->layer().get() != stack_.layers[i]) {  // reloaded (new weights) or disposed
      Bind(env);
      break;
    }
  }
  return env.GetInstanceData<LstmAddon>()->StepWith(info, 0, stack_);
}

GemmArgs LstmAddon::ParseGemm(const Napi::CallbackInfo& info, const std::string& fn, const char* a_name) const {
  Napi::Env env = info.Env();
  if (info.Length() != 7) Fail(env, "LSTM_OPTION", fn + ": expected 7 arguments");
  GemmArgs g;
  g.M = IntArg(env, info[0], "M", 1, std::numeric_limits<int32_t>::max());
  if (!info[2].IsObject() || !info[2].As<Napi::Object>().CheckTypeTag(&kPackedTag)) Fail(env, "LSTM_OPTION", fn + ": expected a Packed matrix");
  g.w = &PackedWrap::Unwrap(info[2].As<Napi::Object>())->packed();
  if (g.w->empty()) Fail(env, "LSTM_DISPOSED", fn + ": this packed matrix was disposed");
  if (int64_t{g.M} * g.w->k > kMaxElements || int64_t{g.M} * g.w->n > kMaxElements) Fail(env, "LSTM_SHAPE", fn + ": operands exceed 2^31 elements");
  g.a = FloatData(env, info[1], a_name, int64_t{g.M} * g.w->k);
  g.c = FloatData(env, info[3], "c", int64_t{g.M} * g.w->n);
  if (!info[4].IsBoolean()) Fail(env, "LSTM_OPTION", fn + ": accumulate must be a boolean");
  g.accumulate = info[4].As<Napi::Boolean>().Value();
  g.isa = Resolve(env, info[5]);
  g.threads = IntArg(env, info[6], "threads", 1, 1024);
  return g;
}

// gemmNT(M, a, packed, c, accumulate, isa, threads): c[M, n] (+)= a[M, k] * W^T, threads
// splitting the panels (each element computed by one thread: any count gives the same bits).
Napi::Value LstmAddon::GemmNT(const Napi::CallbackInfo& info) {
  const GemmArgs g = ParseGemm(info, "gemmNT", "a");
  const lstm::PackedMatrix& w = *g.w;
  const int panels = (w.n + lstm::kPanel - 1) / lstm::kPanel;
  const int nth = GemmThreads(g, panels);
  // Each thread's blocks of A, packed when its slice of W streams from L3. Only then: the
  // backward pass calls this for every step, mostly on slices that do not stream, and
  // zeroing 72 KiB per thread and call made a training step 5% slower (pairwise A/B).
  std::vector<float> scratch;
  if (lstm::gemm_nt_uses_scratch(g.isa, g.M, w, (panels + nth - 1) / nth)) {
    try {
      scratch.resize(static_cast<std::size_t>(nth) * lstm::gemm_scratch_floats());
    } catch (const std::bad_alloc&) {
      Fail(info.Env(), "LSTM_NATIVE", "gemmNT: out of memory");
    }
  }
  if (!g.accumulate) std::fill(g.c, g.c + int64_t{g.M} * w.n, 0.f);
  lstm::parallel_run(nth, [&](const lstm::ParallelContext& ctx) {
    float* mine = scratch.empty() ? nullptr : scratch.data() + static_cast<std::size_t>(ctx.tid) * lstm::gemm_scratch_floats();
    lstm::gemm_nt_panels(g.isa, g.M, g.a, w.k, w, ctx.begin(panels), ctx.end(panels), g.c, w.n, mine);
  });
  return info.Env().Undefined();
}

// gemmTN(M, at, packed, c, accumulate, isa, threads): c[M, n] (+)= at[k, M]^T * W^T, threads
// splitting the rows of c (each element computed by one thread: any count gives the same bits).
Napi::Value LstmAddon::GemmTN(const Napi::CallbackInfo& info) {
  const GemmArgs g = ParseGemm(info, "gemmTN", "at");
  const lstm::PackedMatrix& w = *g.w;
  const int nth = GemmThreads(g, (g.M + 7) / 8);
  std::vector<float> scratch;
  try {
    scratch.resize(static_cast<std::size_t>(nth) * lstm::gemm_scratch_floats());
  } catch (const std::bad_alloc&) {
    Fail(info.Env(), "LSTM_NATIVE", "gemmTN: out of memory");
  }
  if (!g.accumulate) std::fill(g.c, g.c + int64_t{g.M} * w.n, 0.f);
  lstm::parallel_run(nth, [&](const lstm::ParallelContext& ctx) {
    float* mine = scratch.data() + static_cast<std::size_t>(ctx.tid) * lstm::gemm_scratch_floats();
    lstm::gemm_tn_rows(g.isa, g.a, g.M, w, ctx.begin(g.M), ctx.end(g.M), g.c, w.n, mine);
  });
  return info.Env().Undefined();
}

NODE_API_ADDON(LstmAddon)
