// Layout transforms around collectives (Ulysses all-to-all, activation redistribution).
// Element type is opaque (only its size in bytes matters), so one kernel serves every dtype
// bit-exactly. Every transform here is planned as a few strided row copies (row_copy.h) and run
// by an Executor: CPU threads, or the CUDA kernel when built with GALVATRON_CUDA.
//
// ---- The two primitives ----------------------------------------------------------------------
// Tensors are C-contiguous with shape `shape` (rank >= 1); `dim` may be negative (Python style).
// For a tensor split into n chunks along `dim` write it as [outer, n * chunk, inner] with
//   outer = prod(shape[:dim]), chunk = shape[dim] / n, inner = prod(shape[dim+1:]).
//
// split_dim_to_chunks(srcs = {x_0 .. x_{K-1}}, dst, dim, n):
//   dst = [n][K][outer_k, chunk_k, inner_k]
//   i.e. dst holds n equal blocks of c = sum_k numel(x_k) / n elements; block i is the
//   concatenation over k of chunk i of x_k along dim (each made contiguous). Block i is what
//   an all_to_all_single with equal splits sends to rank i.
// chunks_to_dim(src, dsts = {y_0 .. y_{K-1}}, dim, n): the exact inverse, with y_k's shapes
//   given (chunk_k = shape_k[dim] / n): src = [n][K][outer_k, chunk_k, inner_k] -> y_k.
//   After an all-to-all, block i of src came from rank i, so y_k is the concatenation along dim
//   of what the ranks sent, in rank order.
// Each needs shape_k[dim] % n == 0 (no uneven last chunk) and throws std::invalid_argument
// naming the argument otherwise. They are mutual inverses and mutual adjoints (permutations),
// so the backward of one is the other with the same dim, n and shapes.
//
// ---- Ulysses (sp degree P) = the primitives on the head and sequence dims ---------------------
// Activations are [b, s, H, d] (any layout with the sequence dim before the heads dim works:
// pass those dims). Let sl = s / P, Hk/P the local heads of segment k (q, k, v; GQA k/v may
// have fewer heads than q, and v may have its own head size).
//   before attention  pack   = split_dim_to_chunks({q, k, v}  [b, sl, H_k, d_k], dim = heads)
//                     send   = [P (dest rank j = head group j)][3][b, sl, H_k/P, d_k]
//                     recv   = [P (source rank i = sequence chunk i)][3][b, sl, H_k/P, d_k]
//                     unpack = chunks_to_dim(recv, {q', k', v'} [b, s, H_k/P, d_k], dim = seq)
//   after attention   pack   = split_dim_to_chunks({o} [b, s, H/P, d], dim = seq)
//                     send   = [P (dest rank j = sequence chunk j)][b, sl, H/P, d]
//                     recv   = [P (source rank i = head group i)][b, sl, H/P, d]
//                     unpack = chunks_to_dim(recv, {o'} [b, sl, H, d], dim = heads)
// One all_to_all_single(recv, send) with equal splits moves the data; no permute is needed.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "comm/row_copy.h"

namespace galvatron {
namespace comm {

enum class Backend {
  cpu,                 // std::thread workers over byte ranges; memcpy of whole row runs
  cuda,                // csrc/comm/cuda kernel on `cuda_stream` (only with GALVATRON_WITH_CUDA)
  cpu_emulating_cuda,  // single-threaded CPU run of the CUDA kernel's exact tiling/vector
                       // arithmetic: lets the tests check the kernel's indexing without a GPU
};

struct Executor {
  Backend backend = Backend::cpu;
  int num_threads = 1;           // cpu: upper bound; small copies run on one thread
  void* cuda_stream = nullptr;   // cuda: a cudaStream_t (nullptr = legacy default stream)
};

// Below this many bytes per thread, the cpu backend uses fewer threads (thread start-up costs
// more than the copy it would save).
constexpr int64_t kMinBytesPerThread = int64_t{1} << 20;
constexpr int64_t kMaxThreads = 256;

// True when the library was built with the CUDA kernels (GALVATRON_CUDA=ON).
bool built_with_cuda();

// Number of elements of a shape; throws std::invalid_argument (naming `what`) on negatives.
int64_t shape_numel(const std::vector<int64_t>& shape, const char* what);

// Plans (validated, with contiguous row runs merged) and their execution.
std::vector<RowCopy> plan_split_dim_to_chunks(const std::vector<const void*>& srcs, void* dst,
                                              const std::vector<std::vector<int64_t>>& shapes,
                                              int64_t dim, int64_t num_chunks, int64_t elem_bytes);
std::vector<RowCopy> plan_chunks_to_dim(const void* src, const std::vector<void*>& dsts,
                                        const std::vector<std::vector<int64_t>>& shapes,
                                        int64_t dim, int64_t num_chunks, int64_t elem_bytes);
void run_row_copies(const std::vector<RowCopy>& copies, const Executor& exec);

// The primitives described above. `shapes[k]` is the shape of srcs[k] (split) or dsts[k]
// (chunks_to_dim), in elements of `elem_bytes` bytes; all buffers are contiguous and disjoint.
void split_dim_to_chunks(const std::vector<const void*>& srcs, void* dst,
                         const std::vector<std::vector<int64_t>>& shapes, int64_t dim,
                         int64_t num_chunks, int64_t elem_bytes, const Executor& exec);
void chunks_to_dim(const void* src, const std::vector<void*>& dsts,
                   const std::vector<std::vector<int64_t>>& shapes, int64_t dim,
                   int64_t num_chunks, int64_t elem_bytes, const Executor& exec);

// View `src` as a row-major [outer, parts, inner] array of `elem_bytes`-sized elements and write
// `dst` as [parts, outer, inner]: chunk p of every outer row lands contiguously, which is the
// order an all-to-all or all-gather sends/receives. Swapping the roles of outer and parts is
// the inverse. Equals split_dim_to_chunks of shape {outer, parts, inner} along dim 1 into
// `parts` chunks. Throws std::invalid_argument on negative sizes or null pointers with data.
void swap_outer_parts(const void* src, void* dst, int64_t outer, int64_t parts, int64_t inner,
                      int64_t elem_bytes, int num_threads);

}  // namespace comm
}  // namespace galvatron
