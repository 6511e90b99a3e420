"""Small random problems for the search tests, and a brute-force enumerator of their plans."""

from __future__ import annotations

import itertools
import random

from galvatron import _C
from galvatron.profiles import Collective, HardwareProfile, Op, Placement
from galvatron.profiles.model import EmbeddingProfile, LayerTypeProfile, ModelProfile

MiB = 2**20


def random_hardware(rng: random.Random, num_nodes: int, gpus_per_node: int) -> HardwareProfile:
    colls = []
    world = num_nodes * gpus_per_node
    for n in sorted({d for d in range(2, world + 1) if world % d == 0} | {2}):  # any group size
        for op in Op:
            for pl in Placement:
                colls.append(Collective(op, n, pl, rng.uniform(0.0, 0.05), rng.uniform(5.0, 200.0)))
    return HardwareProfile(num_nodes=num_nodes, gpus_per_node=gpus_per_node, device_memory_bytes=2**34,
                           collectives=tuple(colls), overlap_slowdown=rng.uniform(1.0, 1.5),
                           optimizer_ms_per_param=rng.uniform(0, 1e-6),
                           framework_overhead_bytes=rng.randrange(0, 64 * MiB),
                           comm_buffer_bytes=rng.randrange(0, 16 * MiB))


def random_model(rng: random.Random, num_layers: int, num_types: int, max_degree: int, seq_len: int = 48) -> ModelProfile:
    degrees = [d for d in range(1, max_degree + 1) if max_degree % d == 0]  # every divisor
    types = []
    for t in range(num_types):
        fwd = rng.uniform(1.0, 10.0)
        act1 = rng.randrange(20, 200) * MiB
        carry = rng.randrange(1, 8) * MiB
        kept = rng.uniform(0.2, 0.6)  # selective: share of the activations kept
        acts = {k: {d: int(act1 / d * rng.uniform(1.0, 1.5)) for d in degrees}
                for k in ("none", "megatron", "ulysses")}
        selective = {}
        if rng.random() < 0.8:  # some layer types have no selective tables
            selective = {k: {d: int(v * kept) for d, v in tab.items()} for k, tab in acts.items()}
        types.append(LayerTypeProfile(
            name=f"type{t}", param_count=rng.randrange(1, 200) * 2**20, carry_bytes_per_sample=carry,
            seq_len=seq_len, num_heads=24, num_kv_heads=rng.choice([24, 8, 6, 4]),
            tp_collectives=rng.choice([2, 3]), ulysses_bytes_per_sample=rng.randrange(1, 16) * MiB,
            fwd_ms_per_sample={d: fwd / d * rng.uniform(1.0, 1.3) for d in degrees},
            bwd_ms_per_sample={d: 2 * fwd / d * rng.uniform(1.0, 1.3) for d in degrees},
            fwd_ms_fixed=rng.uniform(0, 0.5), bwd_ms_fixed=rng.uniform(0, 0.5),
            act_bytes_per_sample=acts, selective_act_bytes_per_sample=selective,
            selective_recompute_ms_per_sample=(
                {d: fwd / d * rng.uniform(0.05, 0.4) for d in degrees} if selective else {}),
        ))
    emb = EmbeddingProfile(
        embed_param_count=rng.randrange(1, 100) * 2**20, head_param_count=rng.randrange(0, 100) * 2**20,
        tied_param_count=rng.choice([0, rng.randrange(1, 50) * 2**20]), carry_bytes_per_sample=types[0].carry_bytes_per_sample,
        seq_len=seq_len,
        embed_fwd_ms_per_sample={d: 0.5 / d for d in degrees}, embed_bwd_ms_per_sample={d: 1.0 / d for d in degrees},
        head_fwd_ms_per_sample={d: 2.0 / d for d in degrees}, head_bwd_ms_per_sample={d: 4.0 / d for d in degrees},
        embed_act_bytes_per_sample={d: 4 * MiB // d for d in degrees},
        head_act_bytes_per_sample={d: 40 * MiB // d for d in degrees},
    )
    layer_type_of = sorted(rng.randrange(num_types) for _ in range(num_layers))
    return ModelProfile(model="random", seq_len=seq_len, layer_types=types, layer_type_of=layer_type_of,
                        embedding=emb, precision=rng.choice(["bf16", "fp32"]), source="test")


def compositions(total: int, parts: int):
    """Every way to split `total` layers into `parts` chunks of >= 1 layer."""
    for cuts in itertools.combinations(range(1, total), parts - 1):
        bounds = (0, *cuts, total)
        yield [bounds[i + 1] - bounds[i] for i in range(parts)]


def valid(model_tables, s, stage_size: int, mb: int, layer_type: int | None) -> bool:
    dp = stage_size // (s.tp * s.sp)
    if mb % dp:
        return False
    shards = s.sp * (s.tp if s.sp_kind == _C.SpKind.MEGATRON else 1)
    if layer_type is None:
        return model_tables.embedding.seq_len % shards == 0
    lt = model_tables.layer_types[layer_type]
    if s.checkpoint == _C.Checkpoint.SELECTIVE:  # only where the profile describes it
        need = (s.tp * s.sp).bit_length()
        kind = int(s.sp_kind.value)
        if (len(lt.selective_act_bytes_per_sample[kind]) < need
                or len(lt.selective_recompute_ms_per_sample) < need):
            return False
    return lt.seq_len % shards == 0 and lt.num_heads % (s.tp * s.sp) == 0 and lt.num_kv_heads % (s.tp * s.sp) == 0


def _tasks(opts, world: int, L: int):
    """(pp, schedule, v, B, m) combinations of the space, as the search defines them."""
    pps = list(opts.pp_degrees) or [p for p in range(1, world + 1) if world % p == 0 and p <= opts.max_pp]
    single = next((x for x in opts.schedules if x != _C.Schedule.INTERLEAVED_1F1B), _C.Schedule.ONE_F_ONE_B)
    for pp in pps:
        for sched in (list(opts.schedules) if pp > 1 else [single]):
            interleaved = sched == _C.Schedule.INTERLEAVED_1F1B
            for v in (list(opts.virtual_stages) if interleaved else [1]):
                if pp * v > L:
                    continue
                for B in opts.global_batch_sizes:
                    for m in (list(opts.num_microbatches) or [m for m in range(1, B + 1) if B % m == 0]):
                        one_f_one_b_short = sched == _C.Schedule.ONE_F_ONE_B and m < pp  # torch refuses it
                        if B % m == 0 and not (interleaved and m % pp) and not one_f_one_b_short:
                            yield pp, sched, v, B, m


def all_plans(model: ModelProfile, hw: HardwareProfile, opts, limit: int = 200_000):
    """(peak bytes, samples/s, plan) of every plan of the space, each evaluated on its own.
    Raises OverflowError when the space has more than `limit` plans."""
    mt, ht = model.to_tables(), hw.to_tables()
    world, L = opts.world_size, len(model.layer_type_of)
    out, count = [], 0
    for pp, sched, v, B, m in _tasks(opts, world, L):
        stage, mb = world // pp, B // m
        strategies = _C.enumerate_strategies(opts, stage, False)
        per_layer = [[s for s in strategies if valid(mt, s, stage, mb, t)] for t in model.layer_type_of]
        embs = [s for s in _C.enumerate_strategies(opts, stage, True) if valid(mt, s, stage, mb, None)]
        if pp > 1 and any(lt.seq_len % (stage // _gcd(stage, mb)) for lt in mt.layer_types):
            continue  # the pipeline-boundary layout needs the sequence split evenly
        if v > 1 or not opts.search_pp_split:
            splits = [_even(L, pp * v)]
        else:
            splits = list(compositions(L, pp))
        combos = 1
        for c in per_layer:
            combos *= len(c)
        count += combos * len(embs) * len(splits)
        if count > limit:
            raise OverflowError(count)
        for split, emb, layers in itertools.product(splits, embs, itertools.product(*per_layer)):
            if opts.uniform_only and any(not _same(x, layers[0]) for x in layers):
                continue
            p = _C.PlanSpec()
            p.world_size, p.pp, p.schedule, p.virtual_stages = world, pp, sched, v
            p.num_microbatches, p.global_batch_size = m, B
            p.stage_layers, p.layers, p.embedding = split, list(layers), emb
            pred = _C.evaluate_plan(mt, ht, p)
            peak = max(s.total_bytes for s in pred.stage_memory)
            out.append((peak, B / (pred.step_time_ms / 1000.0), p))
    return out


def best_under(plans, budget: int):
    """Highest samples/s among plans whose peak fits `budget`; None when none fits."""
    fits = [(sps, p) for peak, sps, p in plans if peak <= budget]
    return max(fits, key=lambda x: x[0]) if fits else None


def _same(a, b) -> bool:
    return (a.tp, a.sp, a.sp_kind, a.dp_type, a.checkpoint, a.tp_consecutive) == (
        b.tp, b.sp, b.sp_kind, b.dp_type, b.checkpoint, b.tp_consecutive)


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _even(L: int, parts: int) -> list[int]:
    base, extra = divmod(L, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]
