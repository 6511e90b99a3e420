#include "comm/layout.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace galvatron {
namespace comm {

void swap_outer_parts(const void* src, void* dst, int64_t outer, int64_t parts, int64_t inner,
                      int64_t elem_bytes, int num_threads) {
  if (outer < 0 || parts < 0 || inner < 0 || elem_bytes <= 0) {
    throw std::invalid_argument("swap_outer_parts: sizes must be >= 0 and elem_bytes > 0, got outer=" +
                                std::to_string(outer) + " parts=" + std::to_string(parts) +
                                " inner=" + std::to_string(inner) +
                                " elem_bytes=" + std::to_string(elem_bytes));
  }
  const int64_t total_rows = outer * parts;  // rows of `inner` elements
  if (total_rows == 0 || inner == 0) return;
  if (src == nullptr || dst == nullptr) throw std::invalid_argument("swap_outer_parts: null buffer");
  const size_t row_bytes = static_cast<size_t>(inner * elem_bytes);
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  // Each destination row (p, o) copies source row (o, p); split destination rows among threads.
  auto work = [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t p = r / outer, o = r % outer;
      std::memcpy(d + r * row_bytes, s + (o * parts + p) * row_bytes, row_bytes);
    }
  };
  const int64_t bytes = total_rows * static_cast<int64_t>(row_bytes);
  int threads = std::max(1, num_threads);
  if (bytes < (int64_t{1} << 20)) threads = 1;  // thread start-up costs more than small copies
  threads = static_cast<int>(std::min<int64_t>(threads, total_rows));
  if (threads == 1) {
    work(0, total_rows);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t step = (total_rows + threads - 1) / threads;
  for (int t = 0; t < threads; ++t) {
    const int64_t b = t * step, e = std::min(total_rows, b + step);
    if (b < e) pool.emplace_back(work, b, e);
  }
  for (auto& th : pool) th.join();
}

}  // namespace comm
}  // namespace galvatron
