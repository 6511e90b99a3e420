"""Swin: same class logits as transformers (window + shifted-window attention, patch merging),
exact export, layer types per stage, config validation."""

from __future__ import annotations

import pytest
import torch

import galvatron.models as M
from tests.unit.models_hf_util import (
    ATOL,
    assert_roundtrip_exact,
    max_logit_diff,
    pixels,
    tiny_hf_swin,
)

transformers = pytest.importorskip("transformers")






def test_swin_logits_match_transformers():
    hf = tiny_hf_swin()
    ours = M.from_hf(hf)
    assert ours.layers[1].shift == 2 and ours.layers[6].shift == 0  # last stage: window = res
    assert max_logit_diff(hf, ours, pixel_values=pixels()) < ATOL


def test_swin_math_backend_equals_sdpa():
    ours = M.from_hf(tiny_hf_swin())
    math = M.from_hf(tiny_hf_swin())
    for layer in math.layers:
        if hasattr(layer, "attn"):
            layer.attn.backend = M.AttnBackend.MATH
    with torch.no_grad():
        assert (ours(pixel_values=pixels()) - math(pixel_values=pixels())).abs().max() < ATOL


def test_swin_to_hf_roundtrip_is_exact():
    assert_roundtrip_exact(tiny_hf_swin())


def test_swin_layer_types_are_per_stage_with_merging_layers():
    assert M.build("swin-debug", device="meta").layer_types() == [
        "swin_stage0", "swin_stage0", "swin_merge1", "swin_stage1", "swin_stage1", "swin_merge2",
        "swin_stage2", "swin_stage2"]
    spec = M.spec("swin-tiny")
    assert spec.layer_specs["swin_merge2"].hidden_size == 384
    assert spec.layer_specs["swin_stage3"].tokens(spec.seq_len) == 49


@pytest.mark.parametrize("overrides,field", [({"window_size": 3}, "window_size"),
                                             ({"num_heads": (2, 3, 4)}, "num_heads"),
                                             ({"num_heads": (2, 2)}, "num_heads"),
                                             ({"patch_size": 3}, "patch_size")])
def test_swin_invalid_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        M.get_config("swin-debug", **overrides)
