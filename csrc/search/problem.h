// Plain data of the cost model and the search: profiles in, plans and predictions out.
// Units are in the names: _ms (milliseconds), _bytes, _gbps (1e9 bytes/s). No Python here.
#pragma once
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace galvatron {

enum class DpType : int32_t { kDdp = 0, kZero1 = 1, kZero2 = 2, kZero3 = 3 };
enum class SpKind : int32_t { kNone = 0, kMegatron = 1, kUlysses = 2 };
enum class Schedule : int32_t { kGpipe = 0, k1F1B = 1, kInterleaved1F1B = 2 };
// Activation checkpointing of a layer: selective keeps the matmul and fused-attention outputs
// and recomputes the rest; full keeps only the layer input.
enum class Checkpoint : int32_t { kNone = 0, kSelective = 1, kFull = 2 };
enum class Op : int32_t { kAllReduce = 0, kAllGather = 1, kReduceScatter = 2, kAllToAll = 3, kP2P = 4 };
// Where the ranks of a group sit: adjacent ranks of one node, strided ranks of one node, or
// ranks on several nodes.
enum class Placement : int32_t { kConsecutive = 0, kStrided = 1, kInterNode = 2 };
constexpr int kNumOps = 5;
constexpr int kNumPlacements = 3;

// One layer's (or the embedding/head's) parallel strategy. dp = devices_per_stage / (tp*sp).
struct Strategy {
  int32_t tp = 1;
  int32_t sp = 1;  // Ulysses degree (1 unless sp_kind == kUlysses)
  SpKind sp_kind = SpKind::kNone;
  DpType dp_type = DpType::kDdp;
  Checkpoint checkpoint = Checkpoint::kNone;
  bool tp_consecutive = true;
  bool operator==(const Strategy& o) const {
    return tp == o.tp && sp == o.sp && sp_kind == o.sp_kind && dp_type == o.dp_type &&
           checkpoint == o.checkpoint && tp_consecutive == o.tp_consecutive;
  }
};

// Time of a collective as alpha + bytes / bandwidth. `bytes` is the message size: the full
// tensor for all-reduce, the gathered output for all-gather, the full input for reduce-scatter,
// what one rank sends in total for all-to-all, the payload for p2p.
struct CollectiveEntry {
  Op op = Op::kAllReduce;
  int32_t group_size = 2;
  Placement placement = Placement::kConsecutive;
  double alpha_ms = 0.0;
  double bandwidth_gbps = 1.0;
};

struct HardwareTables {
  int32_t num_nodes = 1;
  int32_t gpus_per_node = 1;
  std::vector<CollectiveEntry> collectives;
  // Slowdown when computation and communication run at the same time: overlapping a (compute)
  // and b (comm) takes max(a, b) + (overlap_slowdown - 1) * min(a, b).
  double overlap_slowdown = 1.0;
  double optimizer_ms_per_param = 0.0;    // AdamW step time per local fp32 parameter
  // Inter-node entries describe a group with one rank per node (its ring leaves each node
  // through one NIC). A group with r ranks on each node runs min(r, inter_node_rings) rings at
  // once over as many NICs (NCCL's channels), multiplying the bandwidth. 1: entries as they are.
  int32_t inter_node_rings = 1;
  int64_t framework_overhead_bytes = 0;   // runtime context, allocator slack, kernels
  int64_t comm_buffer_bytes = 0;          // communication library buffers
};

// Per-degree tables: entry i is for the shard degree degrees[i] (d = tp*sp; ascending,
// distinct, any positive integers). A negative entry marks a degree the profile lacks.
int32_t degree_index(const std::vector<int32_t>& degrees, int64_t degree);  // -1 when absent

struct LayerTypeProfile {
  std::string name;
  int64_t param_count = 0;
  int64_t carry_bytes_per_sample = 0;  // the layer's input (= previous layer's output) tensor
  int32_t num_heads = 1;               // tp and Ulysses degrees must divide both head counts
  int32_t num_kv_heads = 1;
  int32_t tp_collectives = 2;          // row-parallel outputs per layer (Megatron: 2)
  int64_t ulysses_bytes_per_sample = 0;  // q,k,v + attention output, full sequence, per fwd
  int64_t seq_len = 1;                   // Megatron-SP / Ulysses degrees must divide it
  bool allow_sequence_parallel = true;   // false: the layer needs the whole sequence (Swin windows)
  std::vector<int32_t> degrees;  // the shard degrees the tables below have entries for
  // Compute per sample on a shard of degree d = tp*sp.
  std::vector<double> fwd_ms_per_sample;
  std::vector<double> bwd_ms_per_sample;  // backward without recomputation
  double fwd_ms_fixed = 0.0;              // per micro-batch constant (launch overheads)
  double bwd_ms_fixed = 0.0;
  // Activation bytes kept for backward per sample, per kind (none/megatron/ulysses), per degree.
  std::vector<int64_t> act_bytes_per_sample[3];
  // Selective checkpointing (empty: not available for this layer type): bytes kept per sample
  // (the input plus the matmul / fused-attention outputs), per kind and degree, and the compute
  // time of what it recomputes in backward, per sample and degree.
  // Tables like the ones above (one entry per degree, negative: that degree missing).
  std::vector<int64_t> selective_act_bytes_per_sample[3];
  std::vector<double> selective_recompute_ms_per_sample;
  // Under mixed precision, a ZeRO-2/3 (FSDP2) unit computes with compute-dtype parameters and
  // FSDP2 casts its input to that dtype, so its residual stream, norms and checkpointed input
  // are in the compute dtype, while DDP / ZeRO-1 units (fp32 parameters under autocast) keep
  // them in fp32 (the tables above). Same layout as the tables above; empty: use those.
  std::vector<int64_t> fsdp_act_bytes_per_sample[3];
  std::vector<int64_t> fsdp_selective_act_bytes_per_sample[3];
  int64_t fsdp_carry_bytes_per_sample = 0;  // the checkpointed input (0: carry_bytes_per_sample)
  // Whether the profile describes selective checkpointing of sp kind `kind` at shard degree
  // `degree` (= tp*sp).
  bool has_selective(SpKind kind, int64_t degree) const;
};

// Embedding (first stage) and head (last stage); they share one strategy.
struct EmbeddingProfile {
  int64_t embed_param_count = 0;  // on the first stage
  int64_t head_param_count = 0;   // on the last stage, excluding a tied weight
  int64_t tied_param_count = 0;   // weight shared by embedding and head (a copy on each end when pp > 1)
  std::vector<int32_t> degrees;  // the shard degrees the tables below have entries for
  std::vector<double> embed_fwd_ms_per_sample, embed_bwd_ms_per_sample;
  std::vector<double> head_fwd_ms_per_sample, head_bwd_ms_per_sample;
  std::vector<int64_t> embed_act_bytes_per_sample, head_act_bytes_per_sample;
  // Working memory of the loss beyond what it keeps for backward (the fp32 logits and their
  // gradients at large vocabularies), per sample; empty: none.
  std::vector<int64_t> head_transient_bytes_per_sample;
  int64_t carry_bytes_per_sample = 0;  // embedding output / head input
  int64_t seq_len = 1;
};

struct ModelTables {
  std::vector<LayerTypeProfile> layer_types;
  std::vector<int32_t> layer_type_of;  // per layer, index into layer_types
  EmbeddingProfile embedding;
  int32_t compute_bytes = 2;  // bytes per element of compute-dtype copies (bf16: 2, fp32: 4)
  bool mixed_precision = true;  // fp32 master weights + compute-dtype copies
};

struct PlanSpec {
  int32_t world_size = 1;
  int32_t pp = 1;
  Schedule schedule = Schedule::k1F1B;
  int32_t virtual_stages = 1;
  int32_t num_microbatches = 1;
  int32_t global_batch_size = 1;
  std::vector<int32_t> stage_layers;  // pp * virtual_stages chunks, model order
  std::vector<Strategy> layers;
  Strategy embedding;
};

struct MemoryBreakdown {
  int64_t param_bytes = 0, grad_bytes = 0, optimizer_bytes = 0, activation_bytes = 0;
  int64_t transient_bytes = 0, buffer_bytes = 0, overhead_bytes = 0;
  int64_t total() const {
    return param_bytes + grad_bytes + optimizer_bytes + activation_bytes + transient_bytes +
           buffer_bytes + overhead_bytes;
  }
};

struct TimeBreakdown {  // milliseconds of one step on the critical stage (or one stage)
  double compute_ms = 0, tp_comm_ms = 0, sp_comm_ms = 0, dp_comm_ms = 0, p2p_ms = 0;
  double redistribution_ms = 0, optimizer_ms = 0, bubble_ms = 0;
  // Per-step gradient synchronisation left exposed: DDP's all-reduce beyond the backward it
  // overlaps, ZeRO-1's reduce-scatter and parameter all-gather, the tied-weight all-reduce.
  // optimizer_ms is the optimizer step alone.
  double grad_sync_ms = 0;
  // Parts of compute_ms: forward compute and recomputation (inside backward).
  double fwd_ms = 0, recompute_ms = 0;
};

struct LayerTiming {  // one micro-batch unless stated
  double fwd_ms = 0, bwd_ms = 0, tp_comm_ms = 0, sp_comm_ms = 0, dp_comm_ms = 0;
  double redistribution_ms = 0, per_step_ms = 0;  // per_step: exposed grad sync + optimizer
};

struct Prediction {
  double step_time_ms = 0;
  std::vector<double> stage_time_ms;  // per pipeline rank: work of one micro-batch (+ amortised per-step tail)
  std::vector<MemoryBreakdown> stage_memory;
  std::vector<LayerTiming> layer_timing;
  LayerTiming embedding_timing;
  TimeBreakdown breakdown;
  std::vector<TimeBreakdown> stage_breakdown;  // every pipeline rank's step, as `breakdown`
  int32_t critical_stage = 0;
};

struct SearchOptions {
  int32_t world_size = 1;
  int64_t memory_budget_bytes = 0;  // per device, after headroom
  std::vector<int32_t> global_batch_sizes;
  std::vector<int32_t> num_microbatches;  // empty: every divisor of the batch
  std::vector<int32_t> pp_degrees;        // empty: every divisor of world_size up to max_pp
  std::vector<Schedule> schedules{Schedule::k1F1B};
  std::vector<int32_t> virtual_stages{2};  // used with kInterleaved1F1B
  int32_t max_tp = 8, max_sp = 8, max_pp = 64;
  std::vector<DpType> dp_types{DpType::kDdp, DpType::kZero1, DpType::kZero2, DpType::kZero3};
  bool allow_ulysses = true, allow_megatron_sp = true, allow_checkpoint = true;  // full checkpointing
  bool allow_selective_checkpoint = true;
  bool allow_strided = true;  // tp groups of non-adjacent ranks
  bool megatron_sp_only = false;  // every tp > 1 strategy with Megatron-SP (one global switch)
  bool search_pp_split = true;  // false: even split only
  bool uniform_only = false;   // every layer the same strategy (for the best-uniform baseline)
  int32_t num_threads = 1;
  // Resource bounds (0: unlimited). The search refuses, before any work, a space of more than
  // max_tasks tasks, and stops with std::invalid_argument once its frontiers have held more
  // than max_frontier_entries entries in total (40 bytes each), so memory and time stay bounded.
  int64_t max_tasks = 0;
  int64_t max_frontier_entries = 0;
  // Set by search() for the duration of one call: the entries used so far, shared by all tasks.
  std::atomic<int64_t>* frontier_entries_used = nullptr;
};

struct SearchStats {
  int64_t tasks = 0, strategies = 0, dp_sweeps = 0, frontier_entries = 0, plans_evaluated = 0;
};

struct SearchOutput {
  bool found = false;
  PlanSpec plan;
  Prediction prediction;
  double samples_per_s = 0;
  SearchStats stats;
  // When nothing fits: the smallest per-device memory that would fit, and for which plan.
  int64_t min_feasible_bytes = -1;
  PlanSpec min_memory_plan;
};

}  // namespace galvatron
