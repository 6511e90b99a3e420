"""Model-zoo API: names, configs, overrides, validation, deterministic init, the contract."""

from __future__ import annotations

import pytest
import torch

import galvatron.models as M
from tests.unit.models_hf_util import DEBUG, debug_batch, debug_labels


def test_list_has_debug_and_real_flavours():
    names = M.list()
    for n in DEBUG + ["gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl", "llama2-7b",
                      "llama2-13b", "llama2-70b", "llama3-8b", "bert-base", "bert-large",
                      "t5-small", "t5-base", "t5-large", "vit-base", "vit-large", "vit-huge",
                      "swin-tiny", "swin-small", "swin-base", "swin-large"]:
        assert n in names


def test_each_flavour_has_one_name_and_aliases_resolve_to_it():
    """``gpt2`` and ``gpt2-small`` were two entries of one flavour: now one name, one alias,
    accepted wherever a name is and listed only with ``aliases=True``."""
    names = M.list()
    assert len(names) == len(set(names)) and "gpt2" not in names
    assert M.aliases() == {"gpt2": "gpt2-small"}
    assert M.list(aliases=True) == names + ["gpt2"]
    for n in names:
        assert M.get_config(n).name == n  # a flavour's config carries its one name
    assert M.get_config("gpt2") == M.get_config("gpt2-small")
    assert M.get_config("gpt2", num_layers=2) == M.get_config("gpt2-small", num_layers=2)
    assert M.spec("gpt2").param_count() == 124_439_808
    configs = [M.get_config(n) for n in names]  # no two names for one architecture
    shapes = {(c.family, *(v for k, v in vars(c).items() if k != "name")) for c in configs}
    assert len(shapes) == len(names)


def test_family_files_import_no_other_family():
    """Shared layers live in layers.py and shared spec helpers in spec.py: no family file
    imports another family (llama, vit and swin used to import gpt2.py / vit.py)."""
    import ast
    import pathlib

    families = {"gpt2", "llama", "bert", "t5", "vit", "swin"}
    root = pathlib.Path(M.__file__).parent
    for fam in families:
        tree = ast.parse((root / f"{fam}.py").read_text())
        imported = {node.module.rsplit(".", 1)[-1] for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module
                    and node.module.startswith("galvatron.models.")}
        imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                     and node.module == "galvatron.models" for a in node.names}
        assert not imported & (families - {fam}), (fam, imported & families)


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="gpt2-debug") as e:
        M.get_config("gpt5-huge")
    assert "gpt5-huge" in str(e.value)


def test_unknown_override_lists_fields():
    with pytest.raises(ValueError, match="num_layers"):
        M.build("gpt2-debug", num_layerz=3)


@pytest.mark.parametrize(
    "name,overrides,field",
    [("gpt2-debug", {"num_heads": 5}, "num_heads"),
     ("llama-debug", {"num_kv_heads": 3}, "num_kv_heads"),
     ("llama-debug", {"hidden_size": 0}, "hidden_size"),
     ("gpt2-debug", {"attn_backend": "cudnn"}, "attn_backend"),
     ("gpt2-debug", {"dropout": 1.5}, "dropout")],
)
def test_invalid_config_names_the_field(name, overrides, field):
    with pytest.raises(ValueError, match=field):
        M.get_config(name, **overrides)


@pytest.mark.parametrize(
    "name,params",
    # published sizes (tied embeddings counted once)
    [("gpt2", 124_439_808), ("gpt2-medium", 354_823_168), ("gpt2-large", 774_030_080),
     ("gpt2-xl", 1_557_611_200), ("llama2-7b", 6_738_415_616), ("llama2-13b", 13_015_864_320),
     ("llama2-70b", 68_976_648_192), ("llama3-8b", 8_030_261_248),
     ("bert-base", 109_514_298), ("bert-large", 335_174_458), ("vit-base", 86_567_656),
     ("vit-large", 304_326_632), ("vit-huge", 632_045_800), ("swin-tiny", 28_288_354),
     ("swin-small", 49_606_258), ("swin-base", 87_768_224), ("swin-large", 196_532_476),
     ("t5-small", 60_506_624), ("t5-base", 222_903_552), ("t5-large", 737_668_096)],
)
def test_real_flavours_have_published_parameter_counts_without_allocating(name, params):
    assert M.spec(name).param_count() == params
    meta = M.build(name, device="meta") if name == "gpt2" else None
    if meta is not None:
        assert meta.num_params() == params


@pytest.mark.parametrize("name", DEBUG)
def test_build_is_deterministic_by_seed_and_by_manual_seed(name):
    a, b = M.build(name, seed=7), M.build(name, seed=7)
    torch.manual_seed(3)
    c = M.build(name)
    torch.manual_seed(3)
    d = M.build(name)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
        assert torch.equal(c.state_dict()[k], d.state_dict()[k])
    q_a, q_c = a.layers[0].attn.q_proj.weight, c.layers[0].attn.q_proj.weight
    assert not torch.equal(q_a, q_c)  # another seed gives other weights


@pytest.mark.parametrize("name", DEBUG)
def test_init_weights_of_one_layer_matches_full_build(name):
    """A rank that materialises only layer 1 gets the same weights as a full build."""
    full = M.build(name, seed=11)
    part = M.build(name, device="meta")
    part.layers[1].to_empty(device="cpu")
    part.init_weights(11)
    for k, v in part.layers[1].state_dict().items():
        assert torch.equal(v, full.layers[1].state_dict()[k]), k
    assert part.layers[0].attn.q_proj.weight.is_meta


@pytest.mark.parametrize("name,owner", [("gpt2-debug", "embed.wte.weight"),
                                        ("t5-debug", "embed.tok.weight")])
def test_init_weights_of_a_lone_tied_head_uses_the_embedding_values(name, owner):
    """The last pipeline stage materialises the head without the embedding: the tie is broken
    by ``to_empty`` but is still reported, and the head gets the embedding's initial values."""
    full = M.build(name, seed=5)
    part = M.build(name, device="meta")
    part.head.to_empty(device="cpu")
    part.init_weights(5)
    assert (owner, "head.lm_head.weight") in part.tied_parameters()
    assert torch.equal(part.head.lm_head.weight, full.get_parameter(owner))
    assert part.get_parameter(owner).is_meta


@pytest.mark.parametrize("name", DEBUG)
def test_contract_embed_layers_head(name):
    """model(**batch) == head(layers(embed(batch))), carries survive a flat tensor send, layer
    types agree with the spec, and the loss is a finite scalar."""
    model = M.build(name, seed=0).eval()
    batch = debug_batch(name)
    with torch.no_grad():  # (with grad, a trainable attention bias changes the SDPA kernel)
        carry = model.embed(batch)
        assert isinstance(carry, M.Carry) and carry.hidden.dim() == 3
        for layer in model.layers:
            assert isinstance(layer.layer_type, str)
            carry = M.Carry.from_tuple(layer(carry).to_tuple())
        logits = model(**batch)
        assert torch.equal(model.head(carry), logits)
    assert model.layer_types() == list(M.spec(name).layer_types)
    labels = debug_labels(name, batch)
    loss = model.loss(logits, {**batch, "labels": labels})
    assert loss.dim() == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("name", DEBUG)
def test_training_step_with_dropout_runs_and_every_parameter_gets_a_gradient(name):
    model = M.build(name, seed=0, dropout=0.1).train()
    batch = debug_batch(name)
    loss = model.loss(model(**batch), {**batch, "labels": debug_labels(name, batch)})
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_unknown_forward_input_is_rejected():
    model = M.build("gpt2-debug", seed=0)
    with pytest.raises(ValueError, match="pixel_values"):
        model(input_ids=torch.zeros(1, 4, dtype=torch.long), pixel_values=torch.zeros(1))


def test_signatures_in_class_docstrings_match_the_methods():
    """A class docstring that spells a method's call (``forward(x, padding_mask=None)``) names
    only arguments the method takes (Attention documented a ``memory_mask`` it did not take)."""
    import importlib
    import inspect
    import pkgutil
    import re

    checked = 0
    for info in pkgutil.iter_modules(M.__path__):
        mod = importlib.import_module(f"galvatron.models.{info.name}")
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ != mod.__name__ or not cls.__doc__:
                continue
            for meth, args in re.findall(r"``(\w+)\(([^`]*)\)``", cls.__doc__):
                fn = getattr(cls, meth, None)
                if not callable(fn):
                    continue
                params = set(inspect.signature(fn).parameters) - {"self"}
                named = {a.split("=")[0].strip().lstrip("*") for a in args.split(",") if a.strip()}
                assert named <= params, (cls.__name__, meth, named - params)
                checked += 1
    assert checked >= 2  # Attention's forward and core at least
