"""Hardware and model profiles: measured, analytic (presets / model specs) or imported."""

from galvatron.profiles.analytic import model_profile
from galvatron.profiles.galvatron_import import hardware_from_galvatron, model_from_galvatron
from galvatron.profiles.hardware import Collective, HardwareProfile, Op, Placement
from galvatron.profiles.model import EmbeddingProfile, LayerTypeProfile, ModelProfile
from galvatron.profiles.presets import hardware_preset, preset_names

__all__ = [
    "Collective",
    "EmbeddingProfile",
    "HardwareProfile",
    "LayerTypeProfile",
    "ModelProfile",
    "Op",
    "Placement",
    "hardware_from_galvatron",
    "hardware_preset",
    "model_from_galvatron",
    "model_profile",
    "preset_names",
]
