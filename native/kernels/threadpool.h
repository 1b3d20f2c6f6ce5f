// A small process-wide compute pool. The caller is participant 0 and works too; one
// parallel job runs at a time, so several models (or several worker_threads) never
// oversubscribe the cores: a second job waits for the first instead of adding threads.
#pragma once

#include <atomic>
#include <functional>

namespace lstm {

// Reusable barrier for the participants of one job: spins briefly (steps are short),
// then yields so a shared, noisy machine does not burn a core.
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void wait();

 private:
  const int n_;
  std::atomic<int> arrived_{0};
  std::atomic<unsigned> generation_{0};
};

struct ParallelContext {
  int tid;
  int nth;
  Barrier* barrier;
  void sync() const {
    if (nth > 1) barrier->wait();
  }
  // [begin, end) of this participant's share of n items.
  int begin(int n) const { return static_cast<int>(static_cast<long long>(n) * tid / nth); }
  int end(int n) const { return static_cast<int>(static_cast<long long>(n) * (tid + 1) / nth); }
};

// Logical cores of this machine (at least 1).
int hardware_threads();

// Runs fn on min(threads, hardware_threads()) participants and returns when all are
// done. fn must not throw.
void parallel_run(int threads, const std::function<void(const ParallelContext&)>& fn);

// parallel_run, but only if no other job holds the pool now; otherwise returns false at
// once without running fn. For a caller that must not wait behind another job's whole
// run (the event-loop thread) and can do its work alone instead.
bool parallel_run_if_idle(int threads, const std::function<void(const ParallelContext&)>& fn);

// True when every pool thread is asleep, so that a job would first have to wake them
// (tens of microseconds on a VM: more than a small streaming step takes on one core).
bool workers_asleep();

// Wake the sleeping pool threads without a job: they spin for the next one for a while
// (a caller that ran a small job alone because they slept, so the next one finds them up).
void wake_workers();

}  // namespace lstm
