"""Collective cost for any group size, from the topology, the way NCCL's own model does it.

NCCL (``src/graph/tuning.cc``) prices a collective on ``n`` ranks over ``k`` nodes as
``latency + bytes / algorithm bandwidth``:

- algorithm bandwidth = bus bandwidth / bus factor, with the ring bus factors of nccl-tests:
  all-reduce ``2(n-1)/n``, all-gather / reduce-scatter ``(n-1)/n`` (on the gathered output /
  full input), all-to-all ``(n-1)/n`` (on what one rank sends), p2p ``1``;
- ring latency = ``base + (steps - inter_steps) * intra_hop + inter_steps * inter_hop`` with
  ``steps`` = ``2(n-1)`` (all-reduce) or ``n-1`` (all-gather / reduce-scatter) and
  ``inter_steps`` = ``2(k-1)`` or ``k-1``; all-reduce may instead use a tree, latency
  ``base + 2((n/k - 1) * intra_hop + log2(k) * inter_hop)``: NCCL picks the faster, and so do
  we (for the latency; the bandwidth is the ring's);
- the hop latencies are NCCL's LL128 figures (NVLink 1.9 us, network 4.0 us per ring hop,
  base 10 us; tree: NVLink 1.2 us, network 8.5 us, base 4.4 us): LL128 is NCCL's default
  protocol on NVLink-connected A100/H100 nodes with GPUDirect RDMA.

Bus bandwidth inside a node is the NVLink/NVSwitch figure nccl-tests reaches; across nodes an
inter-node entry describes a group with one rank per node (its ring leaves every node through
one NIC). The C++ core scales it by the ranks the group has on each node, up to
``HardwareTables.inter_node_rings`` parallel rings (NCCL's channels over as many NICs).

:func:`interpolate` (defined with :class:`HardwareProfile`) extends a *measured* profile to group sizes it was not measured at with the
same model: the measured bus bandwidth (algorithm bandwidth times the bus factor) and latency
are interpolated linearly in ``log2(n)`` between the two nearest measured sizes, and held at the
nearest one beyond the measured range (extrapolation). Every derived entry is marked
(:attr:`Collective.derived`), so a profile says which figures it did not measure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from galvatron.profiles.hardware import (
    Collective,
    Op,
    Placement,
    bus_factor,
    group_sizes,
    interpolate,
)

__all__ = ["Topology", "algorithm_gbps", "bus_factor", "group_sizes", "interpolate", "latency_ms",
           "topology_collectives"]

# NCCL's LL128 latencies in microseconds (src/graph/tuning.cc, hwLat / baseLat).
RING_BASE_US, RING_NVLINK_HOP_US, RING_NET_HOP_US = 10.0, 1.9, 4.0
TREE_BASE_US, TREE_NVLINK_HOP_US, TREE_NET_HOP_US = 4.4, 1.2, 8.5


def algorithm_gbps(op: Op, n: int, bus_gbps: float) -> float:
    return bus_gbps / bus_factor(op, n)


def latency_ms(op: Op, n: int, nodes: int) -> float:
    """NCCL's latency of ``op`` on ``n`` ranks spread over ``nodes`` nodes (ring, or tree for
    all-reduce when faster)."""
    nodes = max(1, min(nodes, n))
    if op is Op.P2P:
        return (RING_BASE_US + (RING_NET_HOP_US if nodes > 1 else RING_NVLINK_HOP_US)) / 1e3
    if op is Op.ALL_REDUCE:
        steps, inter = 2 * (n - 1), 2 * (nodes - 1)
    else:  # all-gather, reduce-scatter; all-to-all: n-1 concurrent sends, priced like a ring pass
        steps, inter = n - 1, nodes - 1
    ring = RING_BASE_US + (steps - inter) * RING_NVLINK_HOP_US + inter * RING_NET_HOP_US
    if op is Op.ALL_REDUCE:
        per_node = math.ceil(n / nodes)
        tree = TREE_BASE_US + 2 * ((per_node - 1) * TREE_NVLINK_HOP_US
                                   + math.ceil(math.log2(nodes)) * TREE_NET_HOP_US)
        ring = min(ring, tree)
    return ring / 1e3


@dataclass(frozen=True)
class Topology:
    """What a preset knows about the cluster: bus bandwidth inside a node (NVLink/NVSwitch),
    per GPU across nodes (its NIC), NICs per node."""

    intra_bus_gbps: float
    nic_bus_gbps: float
    nics_per_node: int

    def inter_node_rings(self, gpus_per_node: int) -> int:
        """Parallel rings a group with many ranks per node can run across nodes: one per NIC,
        no more than the NVLink bandwidth inside the node can feed."""
        by_nvlink = max(1, int(self.intra_bus_gbps // self.nic_bus_gbps))
        return max(1, min(self.nics_per_node, gpus_per_node, by_nvlink))


def topology_collectives(topo: Topology, num_nodes: int, gpus_per_node: int,
                         sizes: list[int] | None = None) -> tuple[Collective, ...]:
    """Entries for every op, every size of ``sizes`` (default :func:`group_sizes`) and every
    placement the size allows (inside a node up to ``gpus_per_node`` ranks; across nodes
    when there are several, and for p2p)."""
    world = num_nodes * gpus_per_node
    out = []
    for n in sizes or group_sizes(world, gpus_per_node):
        for op in Op:
            if op is Op.P2P and n != 2:
                continue
            placements = []
            if n <= gpus_per_node:
                placements += [Placement.CONSECUTIVE, Placement.STRIDED]
            if (num_nodes > 1 and n <= world) or op is Op.P2P:
                placements.append(Placement.INTER_NODE)
            for pl in placements:
                if pl is Placement.INTER_NODE:
                    # one rank per node: n nodes (p2p: 2); the core scales by ranks per node
                    nodes = 2 if op is Op.P2P else n
                    bus = topo.nic_bus_gbps
                else:
                    nodes, bus = 1, topo.intra_bus_gbps
                out.append(Collective(op, n, pl, latency_ms(op, n, nodes), algorithm_gbps(op, n, bus)))
    return tuple(out)
