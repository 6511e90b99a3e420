// The one primitive every layout kernel in csrc/comm reduces to: a batch of strided row copies.
// Plain structs and inline index arithmetic shared by the CPU executor (layout.cpp), the CUDA
// kernel (cuda/row_copy.cu) and a CPU emulation of that kernel's indexing used by the tests.
// Needs no CUDA header: GALVATRON_HD expands to __host__ __device__ only under nvcc.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define GALVATRON_HD __host__ __device__ __forceinline__
#else
#define GALVATRON_HD inline
#endif

namespace galvatron {
namespace comm {

// Copy rows (p, o) for p < parts, o < outer, each `row_bytes` long, from
//   src + p * src_part_stride + o * src_outer_stride   to
//   dst + p * dst_part_stride + o * dst_outer_stride        (all strides in bytes).
// Rows never overlap in dst. "Row order" below means p-major, then o.
struct RowCopy {
  const void* src;
  void* dst;
  int64_t row_bytes;
  int64_t parts;
  int64_t outer;
  int64_t src_part_stride;
  int64_t src_outer_stride;
  int64_t dst_part_stride;
  int64_t dst_outer_stride;
};

// Largest width in {16, 8, 4, 2, 1} bytes dividing both addresses, every stride and row_bytes,
// so that every row of `c` can be moved with aligned loads/stores of that width.
GALVATRON_HD int64_t vector_bytes(const RowCopy& c) {
  const uint64_t bits = reinterpret_cast<uint64_t>(c.src) | reinterpret_cast<uint64_t>(c.dst) |
                        static_cast<uint64_t>(c.row_bytes) |
                        static_cast<uint64_t>(c.src_part_stride) |
                        static_cast<uint64_t>(c.src_outer_stride) |
                        static_cast<uint64_t>(c.dst_part_stride) |
                        static_cast<uint64_t>(c.dst_outer_stride);
  int64_t w = 16;
  while (w > 1 && (bits & static_cast<uint64_t>(w - 1)) != 0) w >>= 1;
  return w;
}

// Work decomposition of the CUDA kernel: a row of `vecs_per_row` vectors is cut into tiles of
// at most `vecs_per_tile` vectors; one warp copies one tile (lanes over vectors, so consecutive
// lanes touch consecutive 16-byte words: coalesced). Tile t covers row t / tiles_per_row.
struct RowTiling {
  int64_t vecs_per_row;
  int64_t tiles_per_row;
  int64_t vecs_per_tile;
  int64_t num_tiles;
};

constexpr int64_t kMaxVecsPerTile = 1024;  // 16 KiB of 16-byte vectors per warp task

GALVATRON_HD RowTiling row_tiling(const RowCopy& c, int64_t vec_bytes) {
  RowTiling t;
  t.vecs_per_row = c.row_bytes / vec_bytes;
  t.tiles_per_row = (t.vecs_per_row + kMaxVecsPerTile - 1) / kMaxVecsPerTile;
  t.vecs_per_tile = t.tiles_per_row == 0 ? 0 : (t.vecs_per_row + t.tiles_per_row - 1) / t.tiles_per_row;
  t.num_tiles = c.parts * c.outer * t.tiles_per_row;
  return t;
}

// Byte offsets (from c.src / c.dst) of the first vector of tile `tile`, and the tile's length
// in vectors. One 64-bit division pair per tile, none per vector.
GALVATRON_HD void tile_offsets(const RowCopy& c, const RowTiling& t, int64_t vec_bytes, int64_t tile,
                               int64_t* src_off, int64_t* dst_off, int64_t* num_vecs) {
  const int64_t row = tile / t.tiles_per_row;
  const int64_t piece = tile - row * t.tiles_per_row;
  const int64_t p = row / c.outer;
  const int64_t o = row - p * c.outer;
  const int64_t first = piece * t.vecs_per_tile;
  const int64_t last = first + t.vecs_per_tile < t.vecs_per_row ? first + t.vecs_per_tile : t.vecs_per_row;
  *src_off = p * c.src_part_stride + o * c.src_outer_stride + first * vec_bytes;
  *dst_off = p * c.dst_part_stride + o * c.dst_outer_stride + first * vec_bytes;
  *num_vecs = last - first;
}

}  // namespace comm
}  // namespace galvatron
