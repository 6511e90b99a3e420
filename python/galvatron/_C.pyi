"""Type stub of the compiled core galvatron._C (private; use the galvatron package)."""

from collections.abc import Sequence
from typing import Any

__version__: str
with_cuda: bool

def dp_degree(world_size: int, pp: int, tp: int, sp: int) -> int: ...

# ---- layout kernels (csrc/comm/layout.h documents the buffer layouts) -------------------------
# CPU variants take C-contiguous buffers (numpy arrays, e.g. torch_tensor.view(int16).numpy());
# the element size is the buffers' itemsize and must be equal across them.
def swap_outer_parts(
    src: Any, dst: Any, outer: int, parts: int, inner: int, num_threads: int = 1
) -> None: ...
def split_dim_to_chunks(
    srcs: Sequence[Any],
    dst: Any,
    shapes: Sequence[Sequence[int]],
    dim: int,
    num_chunks: int,
    num_threads: int = 1,
    emulate_cuda: bool = False,
) -> None: ...
def chunks_to_dim(
    src: Any,
    dsts: Sequence[Any],
    shapes: Sequence[Sequence[int]],
    dim: int,
    num_chunks: int,
    num_threads: int = 1,
    emulate_cuda: bool = False,
) -> None: ...

# CUDA variants take device pointers (tensor.data_ptr()) and a cudaStream_t as int; they raise
# ValueError when the module was built without GALVATRON_CUDA (with_cuda is False).
def cuda_split_dim_to_chunks(
    srcs: Sequence[int],
    dst: int,
    shapes: Sequence[Sequence[int]],
    dim: int,
    num_chunks: int,
    elem_bytes: int,
    stream: int = 0,
) -> None: ...
def cuda_chunks_to_dim(
    src: int,
    dsts: Sequence[int],
    shapes: Sequence[Sequence[int]],
    dim: int,
    num_chunks: int,
    elem_bytes: int,
    stream: int = 0,
) -> None: ...

# ---- activation layouts of the cost model (csrc/search/cost_model.h) --------------------------
class Layout:
    n_batch: int
    n_seq: int
    replicas: int
    consecutive: bool
    def __eq__(self, other: object) -> bool: ...

def layout_of(strategy: Any, stage_size: int) -> Layout: ...
def embedding_layout(strategy: Any, stage_size: int) -> Layout: ...
def boundary_layout(stage_size: int, micro_batch: int) -> Layout: ...
