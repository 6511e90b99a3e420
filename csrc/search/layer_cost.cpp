// Time and memory of one layer (or the embedding/head) under one strategy.
// The terms are listed, with their reasons, in docs/cost_model.md.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "search/cost_model.h"

namespace galvatron {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Bytes of a ZeRO-2/3 gathered parameter: the compute dtype under mixed precision.
int64_t gather_bytes(const ModelTables& model) { return model.mixed_precision ? model.compute_bytes : 4; }

// Entry of a per-degree table for shard degree `degree` (see problem.h); throws when the
// profile has none.
template <typename T>
T at(const std::vector<T>& table, const std::vector<int32_t>& degrees, int64_t degree, const char* what) {
  const int32_t i = degree_index(degrees, degree);
  if (i < 0 || i >= static_cast<int32_t>(table.size()) || table[i] < 0) {
    throw std::invalid_argument(std::string(what) + ": no entry for shard degree " + std::to_string(degree));
  }
  return table[i];
}

// Model-state bytes and data-parallel communication of `param_count` parameters (before tp
// sharding) under strategy `s`; fills the param/grad/optimizer/dp fields of `c`.
// `gather_bytes_per_param`: bytes of a ZeRO-2/3 gathered parameter (the compute dtype under
// mixed precision, where FSDP2 gathers low-precision copies; 4 in fp32).
void add_model_states(const CommModel& comm, const Strategy& s, const LayerGroups& g,
                      int64_t param_count, int64_t gather_bytes_per_param, LayerCost& c) {
  const int64_t p_local = ceil_div(param_count, s.tp);         // this device's tp shard
  const int64_t p_shard = ceil_div(p_local, g.weight_group);   // its ZeRO shard
  // fp32 master parameters, gradients and AdamW states everywhere. DDP / ZeRO-1 units keep
  // fp32 parameters (autocast casts per op); ZeRO-2/3 (FSDP2) gather `gb`-byte copies, compute
  // gradients in that dtype and reduce-scatter them in fp32.
  constexpr int64_t kMasterBytes = 4;
  const int64_t gb = gather_bytes_per_param;
  const bool sharded = s.dp_type == DpType::kZero2 || s.dp_type == DpType::kZero3;
  c.param_bytes += kMasterBytes * (sharded ? p_shard : p_local);
  if (s.dp_type == DpType::kZero2) c.param_bytes += gb * p_local;  // unsharded fwd..bwd copy
  c.grad_bytes += 4 * (sharded ? p_shard : p_local);
  c.optimizer_bytes += 8 * (s.dp_type == DpType::kDdp ? p_local : p_shard);  // AdamW m and v
  // Backward of a ZeRO-2/3 unit (FSDP2, every unit its own root; the runtime drops each
  // unit's reduce-scatter input after its post-backward, see data_parallel.py): first the
  // gathered copy and the unsharded gradient in the gathered dtype (`2 gb p`), then, after the
  // reshard, that gradient and its fp32 flat copy for the reduce-scatter (`(gb + 4) p`).
  // ZeRO-2's gathered copy is already a parameter term (kept from forward), so its excess is
  // `4 p` (at least `gb p`: the copy is freed before the fp32 flat buffer exists).
  // Measured with `galvatron check --fake` (docs/cost_model.md).
  if (s.dp_type == DpType::kZero3) c.spike_bytes += std::max(2 * gb, gb + 4) * p_local;
  if (s.dp_type == DpType::kZero2) c.spike_bytes += 4 * p_local;

  const int32_t n = g.weight_group, rpn = g.weight_ranks_per_node;
  const Placement pl = g.weight_placement;
  const double grad_bytes = 4.0 * static_cast<double>(p_local);  // fp32 reduction
  const double gather_bytes = static_cast<double>(gb * p_local);
  switch (s.dp_type) {
    // Once per step: DDP's all-reduce starts in the last micro-batch's backward (overlapped);
    // ZeRO-1 reduce-scatters after it (not overlapped).
    case DpType::kDdp:
      c.grad_sync_ms += comm.overlap_ms(c.bwd_ms, comm.time_ms(Op::kAllReduce, n, pl, grad_bytes, rpn)) - c.bwd_ms;
      break;
    case DpType::kZero1:
      c.grad_sync_ms += comm.time_ms(Op::kReduceScatter, n, pl, grad_bytes, rpn) +
                        comm.time_ms(Op::kAllGather, n, pl, 4.0 * static_cast<double>(p_local), rpn);
      break;
    case DpType::kZero2: {
      const double ag = comm.time_ms(Op::kAllGather, n, pl, gather_bytes, rpn);
      const double rs = comm.time_ms(Op::kReduceScatter, n, pl, grad_bytes, rpn);
      c.dp_comm_ms += comm.overlap_ms(c.fwd_ms, ag) - c.fwd_ms + comm.overlap_ms(c.bwd_ms, rs) - c.bwd_ms;
      break;
    }
    case DpType::kZero3: {
      const double ag = comm.time_ms(Op::kAllGather, n, pl, gather_bytes, rpn);
      const double rs = comm.time_ms(Op::kReduceScatter, n, pl, grad_bytes, rpn);
      c.dp_comm_ms += comm.overlap_ms(c.fwd_ms, ag) - c.fwd_ms + comm.overlap_ms(c.bwd_ms, ag + rs) - c.bwd_ms;
      break;
    }
  }
  c.optimizer_ms += comm.hw().optimizer_ms_per_param *
                    static_cast<double>(s.dp_type == DpType::kDdp ? p_local : p_shard);
}

// Autocast (bf16/fp16) casts each fp32 weight a matmul uses once per step and keeps the cast
// until the step's autocast region ends (its weight cache; backward reuses it): `compute_bytes`
// per element of this device's tp shard (DDP / ZeRO-1 units). Measured with
// `galvatron check --fake` (docs/cost_model.md).
int64_t autocast_weight_bytes(const ModelTables& model, int64_t param_count, const Strategy& s) {
  // ZeRO-2/3 units run FSDP2's MixedPrecisionPolicy: their gathered parameters already are in
  // the compute dtype, so autocast casts (and caches) nothing for them.
  if (s.dp_type == DpType::kZero2 || s.dp_type == DpType::kZero3) return 0;
  return model.mixed_precision ? int64_t{model.compute_bytes} * ceil_div(param_count, s.tp) : 0;
}

}  // namespace

LayerCost layer_cost(const ModelTables& model, const LayerTypeProfile& lt, const CommModel& comm,
                     const Strategy& s, int32_t stage_first, int32_t stage_size,
                     int32_t micro_batch) {
  LayerCost c;
  const LayerGroups g = layer_groups(comm, s, stage_first, stage_size);
  const int64_t deg = int64_t{s.tp} * s.sp;
  const int64_t lb = micro_batch / g.dp;  // samples on this device
  const double lbd = static_cast<double>(lb);
  c.fwd_ms = lt.fwd_ms_fixed + at(lt.fwd_ms_per_sample, lt.degrees, deg, "fwd_ms_per_sample") * lbd;
  c.bwd_ms = lt.bwd_ms_fixed + at(lt.bwd_ms_per_sample, lt.degrees, deg, "bwd_ms_per_sample") * lbd;
  if (s.checkpoint == Checkpoint::kFull) c.recompute_ms = c.fwd_ms;  // recomputation, part of bwd_ms
  if (s.checkpoint == Checkpoint::kSelective) {  // the non-matmul rest of the forward
    c.recompute_ms = at(lt.selective_recompute_ms_per_sample, lt.degrees, deg, "selective_recompute_ms_per_sample") * lbd;
  }
  c.bwd_ms += c.recompute_ms;
  // forward, backward, and the recomputed forward: both kinds of checkpointing replay the
  // layer's forward collectives (tp / Ulysses), whose outputs are not kept
  const int passes = 2 + (s.checkpoint != Checkpoint::kNone ? 1 : 0);

  const double act_full_bytes = static_cast<double>(lt.carry_bytes_per_sample) * lbd;
  if (s.tp > 1) {
    const double one = s.sp_kind == SpKind::kMegatron
                           ? comm.time_ms(Op::kAllGather, s.tp, g.tp_placement, act_full_bytes, g.tp_ranks_per_node) +
                                 comm.time_ms(Op::kReduceScatter, s.tp, g.tp_placement, act_full_bytes,
                                              g.tp_ranks_per_node)
                           : comm.time_ms(Op::kAllReduce, s.tp, g.tp_placement, act_full_bytes, g.tp_ranks_per_node);
    c.tp_comm_ms = passes * lt.tp_collectives * one;
    if (s.sp_kind == SpKind::kMegatron) {
      // Megatron-SP keeps only the sequence shard of each column-parallel input and gathers it
      // again in backward: one more all-gather per block (tp_collectives) and micro-batch
      c.tp_comm_ms += lt.tp_collectives *
                      comm.time_ms(Op::kAllGather, s.tp, g.tp_placement, act_full_bytes, g.tp_ranks_per_node);
    }
  }
  if (s.sp_kind == SpKind::kUlysses) {
    const double local = static_cast<double>(lt.ulysses_bytes_per_sample) * lbd / s.sp;
    c.sp_comm_ms = passes * comm.time_ms(Op::kAllToAll, s.sp, g.sp_placement, local, g.sp_ranks_per_node);
  }
  add_model_states(comm, s, g, lt.param_count, gather_bytes(model), c);
  c.param_bytes += autocast_weight_bytes(model, lt.param_count, s);

  const int kind = static_cast<int>(s.sp_kind);
  // ZeRO-2/3 units under mixed precision run in the compute dtype (see problem.h)
  const bool fsdp = model.mixed_precision && (s.dp_type == DpType::kZero2 || s.dp_type == DpType::kZero3) &&
                    !lt.fsdp_act_bytes_per_sample[kind].empty();
  const auto& act_table = fsdp ? lt.fsdp_act_bytes_per_sample[kind] : lt.act_bytes_per_sample[kind];
  const int64_t act = at(act_table, lt.degrees, deg, "act_bytes_per_sample") * lb;
  if (s.checkpoint == Checkpoint::kFull) {
    const int64_t seq_shards = s.sp * (s.sp_kind == SpKind::kMegatron ? s.tp : 1);
    const int64_t carry =
        fsdp && lt.fsdp_carry_bytes_per_sample > 0 ? lt.fsdp_carry_bytes_per_sample : lt.carry_bytes_per_sample;
    c.act_bytes = ceil_div(carry, seq_shards) * lb;  // the layer input
    // rematerialised once, and freed by the time a ZeRO-2/3 unit reduce-scatters: the larger
    c.spike_bytes = std::max<int64_t>(c.spike_bytes, act - c.act_bytes);
  } else if (s.checkpoint == Checkpoint::kSelective) {
    // the input plus the matmul / fused-attention outputs; the rest rematerialised once
    const bool fsdp_sel = fsdp && !lt.fsdp_selective_act_bytes_per_sample[kind].empty();
    c.act_bytes = at(fsdp_sel ? lt.fsdp_selective_act_bytes_per_sample[kind] : lt.selective_act_bytes_per_sample[kind],
                     lt.degrees, deg, "selective_act_bytes_per_sample") * lb;
    c.spike_bytes = std::max<int64_t>(c.spike_bytes, act - c.act_bytes);
  } else {
    c.act_bytes = act;
  }
  return c;
}

LayerCost embedding_cost(const ModelTables& model, const CommModel& comm, const Strategy& s,
                         int32_t stage_first, int32_t stage_size, int32_t micro_batch, bool head,
                         bool tied_copy) {
  const EmbeddingProfile& e = model.embedding;
  LayerCost c;
  const LayerGroups g = layer_groups(comm, s, stage_first, stage_size);
  const int64_t deg = int64_t{s.tp} * s.sp;
  const int64_t lb = micro_batch / g.dp;
  const double lbd = static_cast<double>(lb);
  c.fwd_ms = at(head ? e.head_fwd_ms_per_sample : e.embed_fwd_ms_per_sample, e.degrees, deg, "fwd_ms_per_sample") * lbd;
  c.bwd_ms = at(head ? e.head_bwd_ms_per_sample : e.embed_bwd_ms_per_sample, e.degrees, deg, "bwd_ms_per_sample") * lbd;
  const double act_full_bytes = static_cast<double>(e.carry_bytes_per_sample) * lbd;
  if (s.tp > 1) {
    // Vocab-parallel embedding: all-reduce of the partial lookups (forward). Column-parallel
    // head: all-reduce of the input gradient (backward). Megatron-SP runs them as plain tp; the
    // sequence split/gather is the neighbouring redistribution.
    c.tp_comm_ms = comm.time_ms(Op::kAllReduce, s.tp, g.tp_placement, act_full_bytes, g.tp_ranks_per_node);
  }
  const int64_t params = head ? e.head_param_count + (tied_copy ? e.tied_param_count : 0)
                              : e.embed_param_count + e.tied_param_count;
  add_model_states(comm, s, g, params, gather_bytes(model), c);
  if (head) c.param_bytes += autocast_weight_bytes(model, e.head_param_count + e.tied_param_count, s);
  c.act_bytes = at(head ? e.head_act_bytes_per_sample : e.embed_act_bytes_per_sample, e.degrees, deg,
                   "act_bytes_per_sample") * lb;
  if (head && !e.head_transient_bytes_per_sample.empty()) {
    c.spike_bytes = std::max(c.spike_bytes, at(e.head_transient_bytes_per_sample, e.degrees, deg,
                                               "head_transient_bytes_per_sample") * lb);
  }
  if (head && model.mixed_precision && (s.dp_type == DpType::kDdp || s.dp_type == DpType::kZero1)) {
    // The head's weight gradient under autocast (fp32 parameters): the projection's gradient
    // in the compute dtype and its fp32 cast, both alive while it accumulates into `.grad`
    // (the head is one matmul weight besides a norm vector). ZeRO-2/3 heads: the unit's
    // backward term above. After the loss's own working memory, hence the larger of the two.
    const int64_t w = ceil_div(e.head_param_count + e.tied_param_count, s.tp);
    c.spike_bytes = std::max(c.spike_bytes, (int64_t{model.compute_bytes} + 4) * w);
  }
  return c;
}

}  // namespace galvatron
