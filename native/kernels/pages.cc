#include "pages.h"

#include <cstring>
#include <new>
#include <utility>

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

namespace {

constexpr std::align_val_t kLineAlign{64};

#if defined(__linux__)
constexpr std::size_t kHugePage = std::size_t{2} << 20;

// length bytes at a 2 MiB boundary, huge pages asked for; null if the mapping fails.
void* map_huge(std::size_t length) {
  // Map 2 MiB more than needed and unmap the ends around the first aligned address.
  const std::size_t span = length + kHugePage;
  void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const std::uintptr_t base = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t aligned = (base + kHugePage - 1) & ~(kHugePage - 1);
  if (aligned > base) munmap(raw, aligned - base);
  const std::uintptr_t end = base + span;
  if (end > aligned + length) munmap(reinterpret_cast<void*>(aligned + length), end - (aligned + length));
  const int saved = errno;
  madvise(reinterpret_cast<void*>(aligned), length, MADV_HUGEPAGE);  // a hint: refused is fine
  errno = saved;
  return reinterpret_cast<void*>(aligned);
}
#endif

}  // namespace

PageBlock::PageBlock(std::size_t floats) : floats_(floats) {
  if (floats == 0) return;
  const std::size_t bytes = floats * sizeof(float);
#if defined(__linux__)
  if (bytes >= kHugePage / 2) {
    static const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    const std::size_t whole = bytes / kHugePage * kHugePage;
    const std::size_t tail = bytes - whole;
    const std::size_t length = tail >= kHugePage / 2 ? whole + kHugePage : (bytes + page - 1) / page * page;
    if (void* p = map_huge(length)) {  // anonymous memory: already zero
      data_ = static_cast<float*>(p);
      mapped_ = length;
      return;
    }
  }
#endif
  data_ = static_cast<float*>(::operator new(bytes, kLineAlign));
  std::memset(data_, 0, bytes);
}

PageBlock::~PageBlock() { release(); }

PageBlock::PageBlock(PageBlock&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      floats_(std::exchange(other.floats_, 0)),
      mapped_(std::exchange(other.mapped_, 0)) {}

PageBlock& PageBlock::operator=(PageBlock&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    floats_ = std::exchange(other.floats_, 0);
    mapped_ = std::exchange(other.mapped_, 0);
  }
  return *this;
}

void PageBlock::release() noexcept {
  if (data_ == nullptr) return;
#if defined(__linux__)
  if (mapped_ > 0) {
    munmap(data_, mapped_);
    data_ = nullptr;
    return;
  }
#endif
  ::operator delete(data_, kLineAlign);
  data_ = nullptr;
}

}  // namespace lstm
