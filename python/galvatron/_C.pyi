"""Type stub of the compiled core galvatron._C (private; use the galvatron package)."""

from typing import Any

__version__: str
with_cuda: bool

def dp_degree(world_size: int, pp: int, tp: int, sp: int) -> int: ...
def swap_outer_parts(
    src: Any, dst: Any, outer: int, parts: int, inner: int, num_threads: int = 1
) -> None: ...
