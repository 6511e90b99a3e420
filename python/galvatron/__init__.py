"""Galvatron: automatic hybrid parallelism for training Transformer models.

Public API (everything else is internal):

- :class:`Plan`, :class:`LayerStrategy`, :class:`DpType`, :class:`SpKind`, :class:`Schedule`,
  :class:`Precision`, :class:`Checkpoint` -- the training plan and its JSON;
  :mod:`galvatron.plan_io` reads and writes plan files of either format (ours, Galvatron-2's).
- :func:`search`, :func:`estimate`, :class:`SearchResult`, :class:`Prediction` -- the plan
  search and the cost model.
- :class:`HardwareProfile`, :class:`ModelProfile`, :func:`hardware_preset`,
  :func:`model_profile` -- their inputs.
- :mod:`galvatron.models` -- the model zoo.
"""

from galvatron import _C
from galvatron.plan import Checkpoint, DpType, LayerStrategy, Plan, Precision, Schedule, SpKind
from galvatron.profiles import HardwareProfile, ModelProfile, hardware_preset, model_profile
from galvatron.search import Prediction, SearchResult, estimate, search

__version__ = _C.__version__

__all__ = [
    "Checkpoint",
    "DpType",
    "HardwareProfile",
    "LayerStrategy",
    "ModelProfile",
    "Plan",
    "Precision",
    "Prediction",
    "Schedule",
    "SearchResult",
    "SpKind",
    "__version__",
    "estimate",
    "hardware_preset",
    "model_profile",
    "search",
]
