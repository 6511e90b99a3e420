// Host entry points of the CUDA layout kernels (cuda/row_copy.cu). Plain types only, so this
// header needs no CUDA header and can be included by the C++ core and the bindings; it is only
// compiled in when GALVATRON_WITH_CUDA is defined (CMake option GALVATRON_CUDA=ON).
#pragma once
#include <cstdint>

#include "comm/row_copy.h"

namespace galvatron {
namespace comm {
namespace cuda {

// Enqueue one kernel per copy on `stream` (a cudaStream_t; nullptr = legacy default stream) on
// the current device. src/dst must be device (or managed) memory of that device. Each kernel
// uses the widest vector (16/8/4/2/1 bytes) that the copy's addresses, strides and row length
// allow (vector_bytes in row_copy.h) and the warp-per-tile decomposition of row_tiling.
// Returns 0 on success, else the cudaError_t value of the first failing launch (asynchronous
// errors surface at the next synchronisation, as usual).
int copy_rows(const RowCopy* copies, int64_t num_copies, void* stream);

// Text of an error code returned by copy_rows (cudaGetErrorString).
const char* error_string(int code);

}  // namespace cuda
}  // namespace comm
}  // namespace galvatron
