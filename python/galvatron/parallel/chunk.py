"""One pipeline chunk of a rank: [embedding] -> layers -> [head], with the activation moves
between the layouts of consecutive units (:mod:`galvatron.parallel.redistribute`) and to the
pipeline boundary layout. :class:`StageContext` is what every chunk of the rank shares."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from galvatron.parallel.mesh import Groups
from galvatron.parallel.redistribute import Layout, embedding_layout, layout_of, redistribute
from galvatron.parallel.units import Unit
from galvatron.plan import Plan


@dataclass
class StageContext:
    """What every chunk of this rank needs: its stage, its place in it, and the groups."""

    plan: Plan
    rank: int  # global rank
    stage: int  # pipeline stage of this rank
    local_rank: int  # index of this rank inside its stage (0 .. stage_size - 1)
    stage_size: int  # devices per pipeline stage
    seq_len: int
    decoder_seq_len: int  # encoder-decoder models: the decoder length (else seq_len)
    stage_group: object
    groups: Groups
    device: torch.device = torch.device("cpu")


class Chunk(nn.Module):
    """One pipeline chunk on this rank: [embedding] -> layers -> [head], moving activations
    between the layouts of consecutive units (and to the pipeline boundary layout)."""

    def __init__(self, ctx: StageContext, embed: Unit | None, layers: list[Unit],
                 head: Unit | None, in_layout: Layout | None, out_layout: Layout | None) -> None:
        super().__init__()
        self.ctx = ctx
        self.embed_unit, self.layer_units, self.head_unit = embed, layers, head
        self.embed = embed.module if embed else None
        self.layers = nn.ModuleList(u.module for u in layers)
        self.head = head.module if head else None
        owner = getattr(self.embed, "owner", None) or getattr(self.head, "owner", None)
        if owner is not None:  # merged embedding+head (see tied.EmbedHead): register it once
            self.embed_head = owner
        self.in_layout, self.out_layout = in_layout, out_layout
        self.emb_layout = embedding_layout(ctx.plan.embedding, ctx.stage_size)
        self.layouts = [layout_of(u.strategy, ctx.stage_size) for u in layers]

    def _move(self, x, src: Layout, dst: Layout):
        ctx = self.ctx  # the sequence length is read from x: layers may change it (Swin)
        return redistribute(x, src, dst, ctx.local_rank, ctx.stage_size,
                            ctx.plan.micro_batch_size, x.shape[1] * src.n_seq, ctx.stage_group)

    def _rows(self, layout: Layout) -> tuple[int, int]:
        """This rank's micro-batch rows ``[row0, row1)`` under ``layout``."""
        row0, row1, *_ = layout.block(self.ctx.local_rank, self.ctx.plan.micro_batch_size,
                                      self.ctx.seq_len)
        return row0, row1

    def forward(self, x, mask=None, memory=None, memory_mask=None):
        """``x``: the micro-batch ids (first chunk) or this rank's boundary block; ``mask``:
        the whole micro-batch's padding mask ``[mb, seq]`` or None (passed on to the next
        chunk beside the hidden block). Encoder-decoder models also carry the second stream
        in Carry order: ``memory`` (its ids in the first chunk, else this rank's block; moved
        between layouts exactly like ``x``) and its whole-micro-batch ``memory_mask``; an
        absent mask is None or a ``[mb, 0]`` tensor (pipeline stages send only tensors)."""
        mask, memory_mask = _present(mask), _present(memory_mask)
        two_streams = memory is not None
        if self.embed is not None:
            row0, row1 = self._rows(self.emb_layout)
            if two_streams:
                x, memory = self.embed(x[row0:row1], memory[row0:row1])
            else:
                x = self.embed(x[row0:row1])
            cur = self.emb_layout
        else:
            cur = self.in_layout
        for layer, layout in zip(self.layers, self.layouts, strict=True):
            x = self._move(x, cur, layout)
            if two_streams:
                memory = self._move(memory, cur, layout)
            cur = layout
            row0, row1 = self._rows(layout)
            rows, memory_rows = (None if m is None else m[row0:row1] for m in (mask, memory_mask))
            if not two_streams:
                x = layer(x, rows)
                continue
            if not layer.swaps_streams:  # memory passes through unchanged (see LayerIO)
                x = layer(x, rows, memory, memory_rows)
                continue
            x, memory = layer(x, rows, memory, memory_rows)  # streams swapped: the masks too
            mask, memory_mask = memory_mask, mask
        if self.head is not None:
            x = self._move(x, cur, self.emb_layout)
            return self.head(x)
        x = self._move(x, cur, self.out_layout)
        if not two_streams:
            return x if mask is None else (x, mask)
        empty = x.new_empty((self.ctx.plan.micro_batch_size, 0), dtype=torch.long)
        return (x, empty if mask is None else mask, self._move(memory, cur, self.out_layout),
                empty if memory_mask is None else memory_mask)


def _present(mask):
    """None for an absent mask (None or an empty ``[mb, 0]`` placeholder)."""
    return None if mask is None or mask.numel() == 0 else mask
