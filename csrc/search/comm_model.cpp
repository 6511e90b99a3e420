// Collective times, process-group placement, activation layouts and their redistribution.
#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

#include "search/cost_model.h"

namespace galvatron {

int log2_exact(int64_t x) {
  if (x <= 0 || (x & (x - 1)) != 0) return -1;
  int k = 0;
  while ((int64_t{1} << k) < x) ++k;
  return k;
}

static const char* op_name(Op op) {
  switch (op) {
    case Op::kAllReduce: return "all_reduce";
    case Op::kAllGather: return "all_gather";
    case Op::kReduceScatter: return "reduce_scatter";
    case Op::kAllToAll: return "all_to_all";
    case Op::kP2P: return "p2p";
  }
  return "?";
}

static const char* placement_name(Placement p) {
  switch (p) {
    case Placement::kConsecutive: return "consecutive";
    case Placement::kStrided: return "strided";
    case Placement::kInterNode: return "inter_node";
  }
  return "?";
}

// Divisors of n in increasing order, in O(sqrt(n)) (batch sizes may be large).
std::vector<int32_t> divisors(int32_t n) {
  std::vector<int32_t> low, high;
  for (int64_t i = 1; i * i <= n; ++i) {
    if (n % i != 0) continue;
    low.push_back(static_cast<int32_t>(i));
    if (i * i != n) high.push_back(static_cast<int32_t>(n / i));
  }
  low.insert(low.end(), high.rbegin(), high.rend());
  return low;
}

int32_t degree_index(const std::vector<int32_t>& degrees, int64_t degree) {
  const auto it = std::lower_bound(degrees.begin(), degrees.end(), degree);
  return it != degrees.end() && *it == degree ? static_cast<int32_t>(it - degrees.begin()) : -1;
}

bool LayerTypeProfile::has_selective(SpKind kind, int64_t degree) const {
  const int32_t i = degree_index(degrees, degree);
  const auto& act = selective_act_bytes_per_sample[static_cast<int>(kind)];
  const auto& ms = selective_recompute_ms_per_sample;
  return i >= 0 && static_cast<size_t>(i) < act.size() && act[i] >= 0 && static_cast<size_t>(i) < ms.size() &&
         ms[i] >= 0;
}

CommModel::CommModel(const HardwareTables& hw) : hw_(hw) {
  max_size_ = std::max<int32_t>(2, hw_.num_nodes * hw_.gpus_per_node);
  index_.assign(static_cast<size_t>(kNumOps) * (max_size_ + 1) * kNumPlacements, -1);
  for (size_t i = 0; i < hw_.collectives.size(); ++i) {
    const auto& e = hw_.collectives[i];
    if (e.group_size < 2 || e.group_size > max_size_) continue;  // never looked up
    index_[(static_cast<size_t>(e.op) * (max_size_ + 1) + e.group_size) * kNumPlacements +
           static_cast<size_t>(e.placement)] = static_cast<int32_t>(i);
  }
}

const CollectiveEntry* CommModel::find(Op op, int32_t size, Placement placement) const {
  if (size < 2 || size > max_size_) return nullptr;
  // Fall back from strided to consecutive within a node when only one was measured.
  for (Placement p : {placement, Placement::kConsecutive, Placement::kStrided}) {
    if (placement == Placement::kInterNode && p != Placement::kInterNode) break;
    const int32_t idx =
        index_[(static_cast<size_t>(op) * (max_size_ + 1) + size) * kNumPlacements + static_cast<size_t>(p)];
    if (idx >= 0) return &hw_.collectives[idx];
  }
  return nullptr;
}

double CommModel::time_ms(Op op, int32_t size, Placement placement, double bytes, int32_t ranks_per_node) const {
  if (size <= 1 || bytes <= 0) return 0.0;
  const CollectiveEntry* e = find(op, size, placement);
  if (e == nullptr) {
    throw std::invalid_argument(std::string("hardware profile: no collectives entry for op=") +
                                op_name(op) + " group_size=" + std::to_string(size) +
                                " placement=" + placement_name(placement));
  }
  double bw = e->bandwidth_gbps;
  if (placement == Placement::kInterNode) bw *= std::max(1, std::min(ranks_per_node, hw_.inter_node_rings));
  return e->alpha_ms + bytes / (bw * 1e6);
}

int32_t CommModel::ranks_per_node(int32_t first_rank, int32_t size, int32_t stride) const {
  const int64_t last = first_rank + int64_t{size - 1} * stride;
  const int64_t nodes = last / hw_.gpus_per_node - first_rank / hw_.gpus_per_node + 1;
  return static_cast<int32_t>((size + nodes - 1) / nodes);
}

Placement CommModel::placement(int32_t first_rank, int32_t size, int32_t stride) const {
  const int64_t last = first_rank + int64_t{size - 1} * stride;
  if (first_rank / hw_.gpus_per_node != last / hw_.gpus_per_node) return Placement::kInterNode;
  return stride == 1 ? Placement::kConsecutive : Placement::kStrided;
}

double CommModel::overlap_ms(double compute_ms, double comm_ms) const {
  return std::max(compute_ms, comm_ms) + (hw_.overlap_slowdown - 1.0) * std::min(compute_ms, comm_ms);
}

LayerGroups layer_groups(const CommModel& comm, const Strategy& s, int32_t stage_first,
                         int32_t stage_size) {
  LayerGroups g;
  g.dp = stage_size / (s.tp * s.sp);
  g.weight_group = g.dp * s.sp;
  // Strides of the tp, sp and weight (dp*sp) groups in the two rank orders.
  const bool c = s.tp_consecutive;  // rank = (d * sp + j) * tp + t, else (t * sp + j) * dp + d
  const int32_t tp_stride = c ? 1 : s.sp * g.dp, sp_stride = c ? s.tp : g.dp, w_stride = c ? s.tp : 1;
  g.tp_placement = comm.placement(stage_first, s.tp, tp_stride);
  g.sp_placement = comm.placement(stage_first, s.sp, sp_stride);
  g.weight_placement = comm.placement(stage_first, g.weight_group, w_stride);
  g.tp_ranks_per_node = comm.ranks_per_node(stage_first, s.tp, tp_stride);
  g.sp_ranks_per_node = comm.ranks_per_node(stage_first, s.sp, sp_stride);
  g.weight_ranks_per_node = comm.ranks_per_node(stage_first, g.weight_group, w_stride);
  return g;
}

// ---- layouts ---------------------------------------------------------------------------------

Layout layout_of(const Strategy& s, int32_t stage_size) {
  Layout l;
  l.n_batch = stage_size / (s.tp * s.sp);
  l.n_seq = s.sp * (s.sp_kind == SpKind::kMegatron ? s.tp : 1);
  l.replicas = s.sp_kind == SpKind::kMegatron ? 1 : s.tp;
  l.consecutive = s.tp_consecutive || l.order_is_moot();
  return l;
}

Layout embedding_layout(const Strategy& s, int32_t stage_size) {
  Strategy plain = s;
  if (plain.sp_kind == SpKind::kMegatron) plain.sp_kind = SpKind::kNone;
  return layout_of(plain, stage_size);
}

bool head_keeps_tied_copy(const Strategy& embedding, int32_t pp) {
  (void)embedding;  // at pp = 1 the runtime shares one tensor (one unit when ZeRO-2/3 shards it)
  return pp > 1;
}

Layout boundary_layout(int32_t stage_size, int32_t micro_batch) {
  Layout l;
  l.n_batch = std::gcd(stage_size, micro_batch);
  l.n_seq = stage_size / l.n_batch;
  l.replicas = 1;
  l.consecutive = true;
  return l;
}

namespace {

struct Block {  // [b0, b1) samples x [s0, s1) positions, in units of 1/(n_batch) and 1/(n_seq)
  int64_t b0, b1, s0, s1;
};

// Block of device i, in absolute units: samples scaled to `B` total, positions to `S` total.
Block block_of(const Layout& l, int32_t i, int64_t B, int64_t S, int32_t* cls) {
  int32_t bi, si;
  if (l.consecutive) {
    bi = i / (l.n_seq * l.replicas);
    si = (i / l.replicas) % l.n_seq;
  } else {
    bi = i % l.n_batch;
    si = (i / l.n_batch) % l.n_seq;
  }
  if (cls != nullptr) *cls = bi * l.n_seq + si;
  const int64_t bs = B / l.n_batch, ss = S / l.n_seq;
  return {bi * bs, (bi + 1) * bs, si * ss, (si + 1) * ss};
}

// Device holding replica r of class c (batch shard c / n_seq, seq shard c % n_seq).
int32_t device_of(const Layout& l, int32_t c, int32_t r) {
  const int32_t bi = c / l.n_seq, si = c % l.n_seq;
  return l.consecutive ? (bi * l.n_seq + si) * l.replicas + r : (r * l.n_seq + si) * l.n_batch + bi;
}

int64_t overlap(const Block& a, const Block& b) {
  const int64_t db = std::min(a.b1, b.b1) - std::max(a.b0, b.b0);
  const int64_t ds = std::min(a.s1, b.s1) - std::max(a.s0, b.s0);
  return db > 0 && ds > 0 ? db * ds : 0;
}

// Max over devices of max(sent, received) units when every device of `dst` gathers its block
// from `src` (local data first; a piece held by several replicas comes from replica k mod r).
int64_t max_exchange_units(const Layout& src, const Layout& dst, int32_t n, int64_t B, int64_t S) {
  std::vector<int64_t> sent(n, 0);
  int64_t worst = 0;
  for (int32_t k = 0; k < n; ++k) {
    int32_t own_cls;
    const Block need = block_of(dst, k, B, S, nullptr);
    const Block have = block_of(src, k, B, S, &own_cls);
    const int64_t recv = (need.b1 - need.b0) * (need.s1 - need.s0) - overlap(need, have);
    worst = std::max(worst, recv);
    if (recv == 0) continue;
    // Source classes overlapping `need`.
    const int64_t bs = B / src.n_batch, ss = S / src.n_seq;
    for (int64_t bi = need.b0 / bs; bi * bs < need.b1; ++bi) {
      for (int64_t si = need.s0 / ss; si * ss < need.s1; ++si) {
        const int32_t c = static_cast<int32_t>(bi * src.n_seq + si);
        if (c == own_cls) continue;
        const Block blk{bi * bs, (bi + 1) * bs, si * ss, (si + 1) * ss};
        sent[device_of(src, c, k % src.replicas)] += overlap(need, blk);
      }
    }
  }
  for (int64_t s : sent) worst = std::max(worst, s);
  return worst;
}

}  // namespace

double redistribution_recv_fraction(const Layout& a, const Layout& b, int32_t stage_size,
                                    int32_t micro_batch, int64_t seq_len) {
  const int64_t units = max_exchange_units(a, b, stage_size, micro_batch, seq_len);
  return static_cast<double>(units) / static_cast<double>(int64_t{micro_batch} * seq_len);
}

double redistribution_ms(const CommModel& comm, const Layout& a, const Layout& b,
                         int32_t stage_first, int32_t stage_size, int32_t micro_batch,
                         int64_t carry_bytes_per_sample) {
  if (a == b || stage_size == 1) return 0.0;
  // Positions are scaled to a common multiple of both sequence splits; fractions are exact.
  const int64_t S = std::lcm<int64_t>(a.n_seq, b.n_seq);
  const double bytes_per_unit = static_cast<double>(carry_bytes_per_sample) / static_cast<double>(S);
  const Placement pl = comm.placement(stage_first, stage_size, 1);
  const int32_t rpn = comm.ranks_per_node(stage_first, stage_size, 1);
  double t = 0.0;
  for (int dir = 0; dir < 2; ++dir) {  // forward: a -> b; backward (gradients): b -> a
    const int64_t units = dir == 0 ? max_exchange_units(a, b, stage_size, micro_batch, S)
                                   : max_exchange_units(b, a, stage_size, micro_batch, S);
    if (units > 0) t += comm.time_ms(Op::kAllToAll, stage_size, pl, units * bytes_per_unit, rpn);
  }
  return t;
}

}  // namespace galvatron
