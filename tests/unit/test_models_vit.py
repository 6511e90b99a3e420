"""ViT: same class logits as transformers, exact export, image-size validation."""

from __future__ import annotations

import pytest
import torch

import galvatron.models as M
from tests.unit.models_hf_util import (
    ATOL,
    assert_roundtrip_exact,
    max_logit_diff,
    pixels,
    tiny_hf_vit,
)

transformers = pytest.importorskip("transformers")






def test_vit_logits_match_transformers():
    hf = tiny_hf_vit()
    ours = M.from_hf(hf)
    assert max_logit_diff(hf, ours, pixel_values=pixels()) < ATOL


def test_vit_loss_matches_transformers():
    hf = tiny_hf_vit()
    ours = M.from_hf(hf)
    labels = torch.tensor([3, 7])
    with torch.no_grad():
        ref = hf(pixel_values=pixels(), labels=labels).loss
        got = ours.loss(ours(pixel_values=pixels()), {"labels": labels})
    assert abs(ref.item() - got.item()) < ATOL


def test_vit_to_hf_roundtrip_is_exact():
    assert_roundtrip_exact(tiny_hf_vit())


def test_vit_rejects_bad_patch_size_and_wrong_image_size():
    with pytest.raises(ValueError, match="patch_size"):
        M.get_config("vit-debug", patch_size=5)
    model = M.build("vit-debug", seed=0)
    with pytest.raises(ValueError, match="pixel_values"):
        model(pixel_values=pixels(size=48))
