"""Python front of the C++ search: ``galvatron.search``, ``galvatron.estimate``.

Modules: ``api`` (:func:`search`, :func:`estimate`), ``space`` (the options below, their bounds
and the core's ``SearchOptions``; :func:`galvatron2_spaces`), ``result`` (:class:`Prediction`,
:class:`SearchResult`). Plans and profiles become core structs in :mod:`galvatron._core_convert`.

The space searched (exact optimum of the cost model over it; see docs/search.md):
pp in ``pp_degrees`` (default: every divisor of the world size, up to ``max_pp`` and the
layer count); schedule in ``schedules``; virtual stages (interleaved only); global batch in
``global_batch_size``; micro-batch count in ``num_microbatches`` (default: every divisor of the
batch); the layer split across pipeline ranks (any split with >= 1 layer per rank, or the even
split with ``pp_split="even"``; interleaved schedules use the even split); per layer: tp any
divisor of the stage size up to ``max_tp`` (optionally with Megatron-SP), or Ulysses sp (any
divisor) up to ``max_sp`` -- where the model allows the degree (it divides the head counts and
the sequence, and the profile has the degree),
data-parallel type in ``dp_types``, checkpointing none / selective / full (``allow_checkpoint``:
full, ``allow_selective_checkpoint``: selective, where the profile describes it), adjacent or
strided tp ranks; one
embedding/head strategy (same choices, no checkpointing).

``galvatron2_compatible=True`` restricts the space to what Galvatron-2's runtime executes, so
the result always exports to its plan format: one global Megatron-SP switch (searched both
ways: every tp > 1 layer with it, or none), one default dp type (ddp or zero2, each searched)
plus ZeRO-3, the even layer split, adjacent ranks, and the GPipe or 1F1B schedule.

Resource bounds (refused with ``ValueError`` naming the numbers and how to narrow the space):
at most ``MAX_LIST_VALUES`` values per list option, ``max_tasks`` tasks (counted before any
work) and ``max_frontier_entries`` Pareto-frontier entries in total (bounds memory and time).
"""

from galvatron.search.api import estimate, search
from galvatron.search.result import Prediction, SearchResult
from galvatron.search.space import (
    MAX_FRONTIER_ENTRIES,
    MAX_LIST_VALUES,
    MAX_TASKS,
    galvatron2_spaces,
)

__all__ = ["MAX_FRONTIER_ENTRIES", "MAX_LIST_VALUES", "MAX_TASKS", "Prediction", "SearchResult",
           "estimate", "galvatron2_spaces", "search"]
