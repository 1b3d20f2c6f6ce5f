#include "pages.h"

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#endif

namespace lstm {

void populate_pages(void* p, std::size_t bytes) {
#if defined(__linux__)
  constexpr int kPopulateWrite = 23;  // MADV_POPULATE_WRITE (Linux 5.14); older headers lack the name
  constexpr std::size_t kMinBytes = std::size_t{64} << 10;
  static std::atomic<bool> refused{false};  // an older kernel: EINVAL, so stop asking
  if (p == nullptr || bytes < kMinBytes || refused.load(std::memory_order_relaxed)) return;
  static const std::uintptr_t page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  // Whole pages: the first and last hold bytes of the range, so they are mapped and writable.
  const std::uintptr_t begin = reinterpret_cast<std::uintptr_t>(p) & ~(page - 1);
  const std::uintptr_t end = (reinterpret_cast<std::uintptr_t>(p) + bytes + page - 1) & ~(page - 1);
  const int saved = errno;
  if (madvise(reinterpret_cast<void*>(begin), end - begin, kPopulateWrite) != 0 && errno == EINVAL) {
    refused.store(true, std::memory_order_relaxed);
  }
  errno = saved;
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace lstm
