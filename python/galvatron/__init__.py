"""Galvatron: automatic hybrid parallelism for training Transformer models.

Public API (everything else is internal):

- :class:`Plan`, :class:`LayerStrategy`, :class:`DpType`, :class:`SpKind`, :class:`Schedule`,
  :class:`Precision` -- the training plan and its JSON / Galvatron-2 I/O.
"""

from galvatron import _C
from galvatron.plan import DpType, LayerStrategy, Plan, Precision, Schedule, SpKind

__version__ = _C.__version__

__all__ = [
    "DpType",
    "LayerStrategy",
    "Plan",
    "Precision",
    "Schedule",
    "SpKind",
    "__version__",
]
