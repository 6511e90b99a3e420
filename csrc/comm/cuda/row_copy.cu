// CUDA layout kernel: the batch of strided row copies of row_copy.h. Coalesced: a warp copies a
// tile of one row with consecutive lanes on consecutive vectors; vectors are 16 bytes when the
// addresses, strides and row length allow, else 8/4/2/1 (vector_bytes). Index arithmetic is the
// same inline code the CPU emulation (Backend::cpu_emulating_cuda) runs in the tests.
#include <cuda_runtime.h>

#include <cstdint>

#include "comm/cuda/row_copy_cuda.h"

namespace galvatron {
namespace comm {
namespace cuda {
namespace {

constexpr int kThreads = 256;  // 8 warps per block
constexpr int kWarpsPerBlock = kThreads / 32;
constexpr int64_t kMaxBlocks = int64_t{1} << 20;  // grid-stride beyond this

template <typename Vec>
__global__ void __launch_bounds__(kThreads) copy_rows_kernel(RowCopy c, RowTiling t) {
  const int lane = threadIdx.x & 31;
  const int64_t first_warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  const int64_t num_warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const char* src = static_cast<const char*>(c.src);
  char* dst = static_cast<char*>(c.dst);
  for (int64_t tile = first_warp; tile < t.num_tiles; tile += num_warps) {
    int64_t so, doff, n;
    tile_offsets(c, t, static_cast<int64_t>(sizeof(Vec)), tile, &so, &doff, &n);
    const Vec* s = reinterpret_cast<const Vec*>(src + so);
    Vec* d = reinterpret_cast<Vec*>(dst + doff);
    for (int64_t v = lane; v < n; v += 32) d[v] = s[v];
  }
}

template <typename Vec>
cudaError_t launch(const RowCopy& c, cudaStream_t stream) {
  const RowTiling t = row_tiling(c, static_cast<int64_t>(sizeof(Vec)));
  if (t.num_tiles == 0) return cudaSuccess;
  int64_t blocks = (t.num_tiles + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  copy_rows_kernel<Vec><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(c, t);
  return cudaGetLastError();
}

}  // namespace

int copy_rows(const RowCopy* copies, int64_t num_copies, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  for (int64_t i = 0; i < num_copies; ++i) {
    const RowCopy& c = copies[i];
    if (c.parts * c.outer * c.row_bytes == 0) continue;
    cudaError_t err = cudaSuccess;
    switch (vector_bytes(c)) {
      case 16: err = launch<uint4>(c, s); break;
      case 8: err = launch<uint2>(c, s); break;
      case 4: err = launch<unsigned int>(c, s); break;
      case 2: err = launch<unsigned short>(c, s); break;
      default: err = launch<unsigned char>(c, s); break;
    }
    if (err != cudaSuccess) return static_cast<int>(err);
  }
  return 0;
}

const char* error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

}  // namespace cuda
}  // namespace comm
}  // namespace galvatron
