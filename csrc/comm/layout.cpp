#include "comm/layout.h"

#include "comm/thread_pool.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#ifdef GALVATRON_WITH_CUDA
#include "comm/cuda/row_copy_cuda.h"
#endif

namespace galvatron {
namespace comm {
namespace {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// shape viewed as [outer, num_chunks * chunk, inner] around `dim`.
struct DimSplit {
  int64_t outer, chunk, inner;
};

DimSplit split_around(const std::vector<int64_t>& shape, int64_t dim, int64_t num_chunks,
                      const std::string& what) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  if (rank == 0) throw std::invalid_argument(what + " must have at least one dimension");
  if (dim < -rank || dim >= rank) {
    throw std::invalid_argument("dim=" + std::to_string(dim) + " is out of range for " + what +
                                " of shape " + shape_str(shape));
  }
  if (dim < 0) dim += rank;
  shape_numel(shape, what.c_str());
  if (shape[dim] % num_chunks != 0) {
    throw std::invalid_argument(what + " of shape " + shape_str(shape) + ": size " +
                                std::to_string(shape[dim]) + " of dim " + std::to_string(dim) +
                                " is not divisible by num_chunks=" + std::to_string(num_chunks));
  }
  DimSplit s{1, shape[dim] / num_chunks, 1};
  for (int64_t i = 0; i < dim; ++i) s.outer *= shape[i];
  for (int64_t i = dim + 1; i < rank; ++i) s.inner *= shape[i];
  return s;
}

void check_common(size_t num_buffers, size_t num_shapes, int64_t num_chunks, int64_t elem_bytes,
                  const char* buffers_name) {
  if (num_buffers != num_shapes) {
    throw std::invalid_argument(std::string(buffers_name) + " and shapes differ in length (" +
                                std::to_string(num_buffers) + " vs " + std::to_string(num_shapes) + ")");
  }
  if (num_buffers == 0) throw std::invalid_argument(std::string(buffers_name) + " is empty");
  if (num_chunks < 1) {
    throw std::invalid_argument("num_chunks must be >= 1, got " + std::to_string(num_chunks));
  }
  if (elem_bytes < 1) {
    throw std::invalid_argument("elem_bytes must be >= 1, got " + std::to_string(elem_bytes));
  }
}

// Row order = destination memory order (the inner "o" index gets the smaller dst stride), so
// that writes stream sequentially (they matter more than reads: write-allocate, and gathers
// would otherwise fill every P-th block on each pass); then merge rows that are contiguous on
// both sides into longer rows (fewer, longer memcpy runs).
RowCopy merged(RowCopy c) {
  if (c.dst_part_stride < c.dst_outer_stride) {
    std::swap(c.parts, c.outer);
    std::swap(c.src_part_stride, c.src_outer_stride);
    std::swap(c.dst_part_stride, c.dst_outer_stride);
  }
  if (c.outer > 1 && c.src_outer_stride == c.row_bytes && c.dst_outer_stride == c.row_bytes) {
    c.row_bytes *= c.outer;
    c.outer = 1;
  }
  if (c.outer == 1 && c.parts > 1 && c.src_part_stride == c.row_bytes &&
      c.dst_part_stride == c.row_bytes) {
    c.row_bytes *= c.parts;
    c.parts = 1;
  }
  return c;
}

// Builds the plan of split_dim_to_chunks; chunks_to_dim is the same plan with src/dst swapped.
// "packed" is the [n][K][outer_k, chunk_k, inner_k] buffer, "tensors" the K N-d tensors.
std::vector<RowCopy> plan_packed(const std::vector<std::vector<int64_t>>& shapes, int64_t dim,
                                 int64_t num_chunks, int64_t elem_bytes, const char* tensors_name,
                                 bool to_packed, const std::vector<const void*>& tensors,
                                 const void* packed) {
  std::vector<DimSplit> splits;
  int64_t block_bytes = 0;  // bytes of one of the n blocks: sum_k outer_k * chunk_k * inner_k
  for (size_t k = 0; k < shapes.size(); ++k) {
    splits.push_back(split_around(shapes[k], dim, num_chunks,
                                  std::string(tensors_name) + "[" + std::to_string(k) + "]"));
    block_bytes += splits.back().outer * splits.back().chunk * splits.back().inner * elem_bytes;
  }
  std::vector<RowCopy> plan;
  int64_t segment_offset = 0;
  for (size_t k = 0; k < shapes.size(); ++k) {
    const DimSplit& s = splits[k];
    const int64_t row = s.chunk * s.inner * elem_bytes;
    // Row (p, o): chunk p of outer index o.
    const char* t = static_cast<const char*>(tensors[k]);
    const char* b = static_cast<const char*>(packed) + segment_offset;
    segment_offset += s.outer * row;
    if (row == 0 || s.outer == 0) continue;
    if (t == nullptr || packed == nullptr) {
      throw std::invalid_argument(std::string(tensors_name) + "[" + std::to_string(k) +
                                  "] or the packed buffer is null but holds data");
    }
    RowCopy c{};
    c.row_bytes = row;
    c.parts = num_chunks;
    c.outer = s.outer;
    const int64_t tensor_part = row, tensor_outer = num_chunks * row;
    const int64_t packed_part = block_bytes, packed_outer = row;
    if (to_packed) {
      c.src = t;
      c.dst = const_cast<char*>(b);
      c.src_part_stride = tensor_part, c.src_outer_stride = tensor_outer;
      c.dst_part_stride = packed_part, c.dst_outer_stride = packed_outer;
    } else {
      c.src = b;
      c.dst = const_cast<char*>(t);
      c.src_part_stride = packed_part, c.src_outer_stride = packed_outer;
      c.dst_part_stride = tensor_part, c.dst_outer_stride = tensor_outer;
    }
    plan.push_back(merged(c));
  }
  return plan;
}

constexpr int64_t kMaxMemcpyBytes = int64_t{256} << 10;
constexpr int64_t kItemBytes = int64_t{256} << 10;  // unit of work claimed by a thread

// Copies bytes [lo, hi) of `c` in row order (p-major, then o, then byte within the row).
void copy_byte_range(const RowCopy& c, int64_t lo, int64_t hi) {
  const char* s = static_cast<const char*>(c.src);
  char* d = static_cast<char*>(c.dst);
  int64_t r = lo / c.row_bytes, col = lo - r * c.row_bytes;
  int64_t p = r / c.outer, o = r - p * c.outer;
  while (lo < hi) {
    // At most kMaxMemcpyBytes per call: glibc switches to non-temporal stores for copies of
    // several MiB, which evict the result from cache just before the collective reads it.
    const int64_t n = std::min({c.row_bytes - col, hi - lo, kMaxMemcpyBytes});
    std::memcpy(d + p * c.dst_part_stride + o * c.dst_outer_stride + col,
                s + p * c.src_part_stride + o * c.src_outer_stride + col, static_cast<size_t>(n));
    lo += n;
    col += n;
    if (col == c.row_bytes) {
      col = 0;
      if (++o == c.outer) o = 0, ++p;
    }
  }
}

void run_cpu(const std::vector<RowCopy>& copies, int num_threads) {
  std::vector<int64_t> begin;  // byte offset of each copy in the concatenation of all copies
  int64_t total = 0;
  for (const RowCopy& c : copies) {
    begin.push_back(total);
    total += c.parts * c.outer * c.row_bytes;
  }
  const int64_t by_size = std::max<int64_t>(1, total / kMinBytesPerThread);
  const int threads = static_cast<int>(std::min<int64_t>({std::max(1, num_threads), by_size, kMaxThreads}));
  if (threads == 1) {
    for (const RowCopy& c : copies) copy_byte_range(c, 0, c.parts * c.outer * c.row_bytes);
    return;
  }
  // Items of kItemBytes of the concatenated copies, claimed dynamically: balanced whatever the
  // row sizes, and long rows (e.g. whole sequence chunks) are split too.
  const int64_t num_items = (total + kItemBytes - 1) / kItemBytes;
  parallel_for(num_items, threads, [&](int64_t item) {
    const int64_t lo = item * kItemBytes, hi = std::min(total, lo + kItemBytes);
    for (size_t k = 0; k < copies.size(); ++k) {
      const int64_t end = k + 1 < copies.size() ? begin[k + 1] : total;
      if (end <= lo || begin[k] >= hi) continue;
      copy_byte_range(copies[k], std::max(lo, begin[k]) - begin[k], std::min(hi, end) - begin[k]);
    }
  });
}

// The CUDA kernel's loop structure (cuda/row_copy.cu), run on the CPU one vector at a time.
void run_cpu_emulating_cuda(const std::vector<RowCopy>& copies) {
  for (const RowCopy& c : copies) {
    const int64_t vec = vector_bytes(c);
    const RowTiling tiling = row_tiling(c, vec);
    for (int64_t tile = 0; tile < tiling.num_tiles; ++tile) {
      int64_t so, doff, n;
      tile_offsets(c, tiling, vec, tile, &so, &doff, &n);
      for (int64_t v = 0; v < n; ++v) {
        std::memcpy(static_cast<char*>(c.dst) + doff + v * vec,
                    static_cast<const char*>(c.src) + so + v * vec, static_cast<size_t>(vec));
      }
    }
  }
}

}  // namespace

bool built_with_cuda() {
#ifdef GALVATRON_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int64_t shape_numel(const std::vector<int64_t>& shape, const char* what) {
  int64_t n = 1;
  for (int64_t x : shape) {
    if (x < 0) {
      throw std::invalid_argument(std::string(what) + " has a negative size in shape " + shape_str(shape));
    }
    n *= x;
  }
  return n;
}

std::vector<RowCopy> plan_split_dim_to_chunks(const std::vector<const void*>& srcs, void* dst,
                                              const std::vector<std::vector<int64_t>>& shapes,
                                              int64_t dim, int64_t num_chunks, int64_t elem_bytes) {
  check_common(srcs.size(), shapes.size(), num_chunks, elem_bytes, "srcs");
  return plan_packed(shapes, dim, num_chunks, elem_bytes, "srcs", true, srcs, dst);
}

std::vector<RowCopy> plan_chunks_to_dim(const void* src, const std::vector<void*>& dsts,
                                        const std::vector<std::vector<int64_t>>& shapes,
                                        int64_t dim, int64_t num_chunks, int64_t elem_bytes) {
  check_common(dsts.size(), shapes.size(), num_chunks, elem_bytes, "dsts");
  std::vector<const void*> tensors(dsts.begin(), dsts.end());
  return plan_packed(shapes, dim, num_chunks, elem_bytes, "dsts", false, tensors, src);
}

void run_row_copies(const std::vector<RowCopy>& copies, const Executor& exec) {
  switch (exec.backend) {
    case Backend::cpu:
      return run_cpu(copies, exec.num_threads);
    case Backend::cpu_emulating_cuda:
      return run_cpu_emulating_cuda(copies);
    case Backend::cuda:
#ifdef GALVATRON_WITH_CUDA
      if (int err = cuda::copy_rows(copies.data(), static_cast<int64_t>(copies.size()), exec.cuda_stream)) {
        throw std::runtime_error(std::string("CUDA layout kernel failed: ") + cuda::error_string(err));
      }
      return;
#else
      throw std::invalid_argument("backend=cuda: galvatron was built without GALVATRON_CUDA");
#endif
  }
}

void split_dim_to_chunks(const std::vector<const void*>& srcs, void* dst,
                         const std::vector<std::vector<int64_t>>& shapes, int64_t dim,
                         int64_t num_chunks, int64_t elem_bytes, const Executor& exec) {
  run_row_copies(plan_split_dim_to_chunks(srcs, dst, shapes, dim, num_chunks, elem_bytes), exec);
}

void chunks_to_dim(const void* src, const std::vector<void*>& dsts,
                   const std::vector<std::vector<int64_t>>& shapes, int64_t dim,
                   int64_t num_chunks, int64_t elem_bytes, const Executor& exec) {
  run_row_copies(plan_chunks_to_dim(src, dsts, shapes, dim, num_chunks, elem_bytes), exec);
}

void swap_outer_parts(const void* src, void* dst, int64_t outer, int64_t parts, int64_t inner,
                      int64_t elem_bytes, int num_threads) {
  if (outer < 0 || parts < 0 || inner < 0 || elem_bytes <= 0) {
    throw std::invalid_argument("swap_outer_parts: sizes must be >= 0 and elem_bytes > 0, got outer=" +
                                std::to_string(outer) + " parts=" + std::to_string(parts) +
                                " inner=" + std::to_string(inner) +
                                " elem_bytes=" + std::to_string(elem_bytes));
  }
  if (outer * parts * inner == 0) return;
  if (src == nullptr || dst == nullptr) throw std::invalid_argument("swap_outer_parts: null buffer");
  Executor exec;
  exec.num_threads = num_threads;
  split_dim_to_chunks({src}, dst, {{outer, parts, inner}}, 1, parts, elem_bytes, exec);
}

}  // namespace comm
}  // namespace galvatron
