// Fresh memory, page by page. On first write each page of a new allocation faults into
// the kernel, which maps and zeroes it: ~13.6 us a page on the VM these benchmarks ran on
// (a hypervisor exit per fault), so a forward's 8 MiB output cost 23 ms in faults alone.
#pragma once

#include <cstddef>

namespace lstm {

// Maps the pages under [p, p + bytes) writable in one system call where the OS can
// (Linux 5.14+: madvise MADV_POPULATE_WRITE), as the first writes would one fault at a
// time; the contents do not change. On the VM above: 1.6 ms for 8 MiB against 23.5 ms
// of faults. Does nothing below 64 KiB, on other systems, or where the call is refused.
void populate_pages(void* p, std::size_t bytes);

// Zeroed memory in huge pages where it is large. Two users:
// - weights that every time step reads again: where they nearly fill L2 (1 MiB of
//   recurrent weights against 1 MiB of L2 per core), 4 KiB pages land on L2 sets unevenly
//   (each page's set group is chance), so some sets overflow and those lines come from L3
//   every step. Backed by 2 MiB pages the block maps onto the sets evenly.
// - forwardAsync's copies of its inputs, written on the event-loop thread. On the VM these
//   benchmarks ran on, once the process has freed memory (a forward's workspace, V8's
//   dropped outputs), the first touch of each 4 KiB page of long-held memory costs ~4 us
//   with no page fault counted: one write per page of 42 MB took 10-40 ms in C. With 2 MiB
//   pages it took 0.4 ms. (The guest is a PVM one, paravirtualized on shadow page tables:
//   its kernel command line has pvm_* options and its profiles show pvm_* symbols. Our
//   guess is that freeing memory, with its TLB flushes, drops the host's shadow entries,
//   and a touch of each page then exits to the host to rebuild one: once per 4 KiB page,
//   or once per 2 MiB one.)
// On Linux, from 1 MiB up, the block is 2 MiB-aligned and asks for transparent huge pages
// (madvise MADV_HUGEPAGE; the system may still decline): a tail of at least 1 MiB past the
// last whole 2 MiB is rounded up to 2 MiB, a shorter one stays in 4 KiB pages. Elsewhere,
// or smaller, it is ordinary 64-byte-aligned memory.
class PageBlock {
 public:
  PageBlock() = default;
  explicit PageBlock(std::size_t floats);  // throws std::bad_alloc
  ~PageBlock();
  PageBlock(PageBlock&& other) noexcept;
  PageBlock& operator=(PageBlock&& other) noexcept;
  PageBlock(const PageBlock&) = delete;
  PageBlock& operator=(const PageBlock&) = delete;

  float* data() const { return data_; }
  std::size_t floats() const { return floats_; }
  // Bytes the block holds (its mapping, rounded as above).
  std::size_t bytes() const { return mapped_ > 0 ? mapped_ : floats_ * sizeof(float); }
  // Whether it was mapped 2 MiB-aligned with huge pages asked for (tests).
  bool huge() const { return mapped_ > 0; }

 private:
  void release() noexcept;
  float* data_ = nullptr;
  std::size_t floats_ = 0;
  std::size_t mapped_ = 0;  // > 0: mmap'd by us, this long
};

}  // namespace lstm
