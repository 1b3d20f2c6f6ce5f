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

}  // namespace lstm
