"""BERT: same MLM logits as transformers (with/without padding and token types), exact export."""

from __future__ import annotations

import pytest
import torch

import galvatron.models as M
from tests.unit.models_hf_util import (
    ATOL,
    assert_roundtrip_exact,
    ids,
    max_logit_diff,
    right_padding_mask,
    tiny_hf_bert,
)

transformers = pytest.importorskip("transformers")




@pytest.mark.parametrize("masked", [False, True])
def test_bert_logits_match_transformers(masked):
    hf = tiny_hf_bert()
    ours = M.from_hf(hf)
    inputs = {"input_ids": ids()}
    if masked:
        types = torch.zeros(2, 8, dtype=torch.long)
        types[:, 4:] = 1
        inputs.update(attention_mask=right_padding_mask(), token_type_ids=types)
    assert max_logit_diff(hf, ours, **inputs) < ATOL


def test_bert_mlm_loss_matches_transformers():
    hf = tiny_hf_bert()
    ours = M.from_hf(hf)
    x = ids()
    labels = torch.full_like(x, -100)
    labels[:, 2] = x[:, 2]
    with torch.no_grad():
        ref = hf(input_ids=x, labels=labels).loss
        got = ours.loss(ours(input_ids=x), {"labels": labels})
    assert abs(ref.item() - got.item()) < ATOL


@pytest.mark.parametrize("tied", [True, False])
def test_bert_to_hf_roundtrip_is_exact(tied):
    assert_roundtrip_exact(tiny_hf_bert(tie_word_embeddings=tied))


def test_bert_other_activation_is_rejected_by_name():
    with pytest.raises(ValueError, match="hidden_act"):
        M.from_hf(tiny_hf_bert(hidden_act="relu"))
