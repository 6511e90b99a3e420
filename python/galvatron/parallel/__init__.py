"""Hybrid-parallel runtime: train any layer-wise :class:`galvatron.Plan` on torch.distributed.

API::

    import torch.distributed as dist
    from galvatron import parallel
    dist.init_process_group("gloo", ...)            # world_size == plan.world_size
    pm = parallel.build("gpt2-debug", plan, seed=0, seq_len=64, lr=1e-3,
                        max_grad_norm=1.0)          # or a GalvatronModel (mutated in place)
    loss = pm.train_step({"input_ids": ids, "labels": labels})  # global batch, every rank
    pm.local_parameters()                           # (full name, local tensor, tp slice)
    pm.optimizer                                    # Optimizers (AdamW + ZeRO-1 AdamW)
    with parallel.fail_fast(): ...                  # an error ends this rank at once
    model = parallel.load_hf_checkpoint_for_rank(dir, plan)  # only this rank's parts read

``train_step`` takes the *global* batch (``[global_batch_size, seq_len]``, identical on every
rank), runs ``num_microbatches`` micro-batches (pipelined when ``pp > 1``), synchronises
gradients, clips by the global norm, steps AdamW and returns the global mean token loss.
The model is built identically on every rank from ``seed`` and then sliced, so results equal
single-process training. ``docs/runtime.md`` describes every technique and its communication.

Files, one per technique, and ``parallelize.py`` composing them (``build``): ``mesh.py`` (rank
coordinates, groups, plan validation), ``tensor_parallel.py`` (Megatron TP/SP,
vocabulary-parallel embedding/head/loss), ``ulysses.py`` (all-to-all around ``attn.core``),
``redistribute.py`` (activation layouts and the all-to-all between them), ``data_parallel.py``
(DDP sync, ZeRO-1, FSDP2 ZeRO-2/3, ``Optimizers``), ``pipeline.py`` (micro-batches and
schedules), ``gradients.py`` (finishing and clipping), ``tied.py`` (tied embedding/head),
``chunk.py`` (a pipeline chunk), ``model.py`` (``ParallelModel``), ``builder.py`` (one rank's
groups and unit constructors), ``units.py`` (layer/embedding/head wrappers, checkpointing),
``shared.py`` (parameters shared by several layers: T5's bias tables), ``parts.py`` (the parts
a rank holds; loading only those from a HF checkpoint), ``faults.py`` (``fail_fast``),
``packing.py`` (C++ packing kernels), ``state.py`` (checkpoint pieces).
"""

from galvatron.parallel.faults import fail_fast
from galvatron.parallel.model import ParallelModel
from galvatron.parallel.parallelize import build
from galvatron.parallel.parts import RankParts, load_hf_checkpoint_for_rank, rank_parts

__all__ = ["ParallelModel", "RankParts", "build", "fail_fast", "load_hf_checkpoint_for_rank",
           "rank_parts"]
