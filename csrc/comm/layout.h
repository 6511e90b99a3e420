// Layout transforms around collectives. CPU implementations, multi-threaded; element type is
// opaque (only its size in bytes matters), so one kernel serves every dtype bit-exactly.
#pragma once
#include <cstddef>
#include <cstdint>

namespace galvatron {
namespace comm {

// View `src` as a row-major [outer, parts, inner] array of `elem_bytes`-sized elements and write
// `dst` as [parts, outer, inner]: chunk p of every outer row lands contiguously, which is the
// order an all-to-all or all-gather sends/receives. Swapping the roles of outer and parts is
// the inverse. Throws std::invalid_argument on negative sizes or null pointers with data.
void swap_outer_parts(const void* src, void* dst, int64_t outer, int64_t parts, int64_t inner,
                      int64_t elem_bytes, int num_threads);

}  // namespace comm
}  // namespace galvatron
