"""Shared helpers of the model-zoo tests: tiny random Hugging Face models, comparisons."""

from __future__ import annotations

import galvatron.models as M
import torch

ATOL = 1e-5


def ids(batch: int = 2, seq: int = 8, vocab: int = 512, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def right_padding_mask(batch: int = 2, seq: int = 8) -> torch.Tensor:
    """Row 0 full, row 1 padded after 5 tokens (right padding keeps every query defined)."""
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, 5:] = 0
    return mask


def max_logit_diff(hf_model, ours, **inputs) -> float:
    with torch.no_grad():
        return (hf_model(**inputs).logits - ours(**inputs)).abs().max().item()


def assert_roundtrip_exact(hf_model) -> None:
    """hf -> ours -> hf gives the identical state dict."""
    back = M.to_hf(M.from_hf(hf_model))
    a, b = hf_model.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
