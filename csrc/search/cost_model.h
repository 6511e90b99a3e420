// The cost model: time and memory of one layer under one strategy, redistribution between
// layouts, and the whole-plan prediction. Every term is documented in docs/cost_model.md.
#pragma once
#include <cstdint>
#include <vector>

#include "search/problem.h"

namespace galvatron {

int log2_exact(int64_t x);  // -1 when x is not a power of two
std::vector<int32_t> divisors(int32_t n);  // ascending

// Validates the tables (complete per-degree entries, positive sizes); throws
// std::invalid_argument naming the field.
void validate_model(const ModelTables& model);
void validate_hardware(const HardwareTables& hw);
// Refuses profiles whose memory sums at `max_global_batch` samples could overflow int64 bytes.
void validate_magnitudes(const ModelTables& model, int64_t max_global_batch);

// Collective time lookups.
class CommModel {
 public:
  explicit CommModel(const HardwareTables& hw);
  // Time of `op` moving `bytes` over a group of `size` ranks; 0 for size 1 or 0 bytes. An
  // inter-node group with `ranks_per_node` ranks on each node runs that many rings at once, up
  // to HardwareTables::inter_node_rings (see problem.h).
  double time_ms(Op op, int32_t size, Placement placement, double bytes, int32_t ranks_per_node = 1) const;
  // Placement of a group of `size` ranks spaced `stride` apart, starting at `first_rank`.
  Placement placement(int32_t first_rank, int32_t size, int32_t stride) const;
  // Ranks such a group has on each node it spans (size / nodes spanned, rounded up).
  int32_t ranks_per_node(int32_t first_rank, int32_t size, int32_t stride) const;
  double overlap_ms(double compute_ms, double comm_ms) const;  // both at once, with slowdown
  const HardwareTables& hw() const { return hw_; }

 private:
  const CollectiveEntry* find(Op op, int32_t size, Placement placement) const;
  HardwareTables hw_;
  int32_t max_size_ = 1;        // entries for larger groups are never looked up
  std::vector<int32_t> index_;  // (op, size, placement) -> entry index or -1
};

// The process groups of one layer inside a pipeline stage of `stage_size` devices starting at
// global rank `stage_first`. Consecutive layout orders ranks as (dp, sp, tp) with tp innermost;
// strided as (tp, sp, dp) with dp innermost.
struct LayerGroups {
  int32_t dp = 1;
  Placement tp_placement = Placement::kConsecutive, sp_placement = Placement::kConsecutive;
  Placement weight_placement = Placement::kConsecutive;  // dp*sp ranks holding one weight shard
  int32_t weight_group = 1;                              // dp * sp
  int32_t tp_ranks_per_node = 1, sp_ranks_per_node = 1, weight_ranks_per_node = 1;
};
LayerGroups layer_groups(const CommModel& comm, const Strategy& s, int32_t stage_first,
                         int32_t stage_size);

struct LayerCost {
  // One micro-batch.
  double fwd_ms = 0, bwd_ms = 0;  // compute; bwd includes recomputation when checkpointed
  double recompute_ms = 0;        // the recomputation inside bwd_ms
  double tp_comm_ms = 0, sp_comm_ms = 0;
  double dp_comm_ms = 0;  // exposed ZeRO-2/3 gather/scatter time beyond compute
  // One step.
  double grad_sync_ms = 0;  // exposed DDP sync beyond the backward it overlaps; ZeRO-1 RS + AG
  double optimizer_ms = 0;  // the optimizer step (ZeRO-1's parameter all-gather is grad_sync)
  // Bytes per device.
  int64_t param_bytes = 0, grad_bytes = 0, optimizer_bytes = 0;
  int64_t act_bytes = 0;    // kept for backward by one micro-batch
  int64_t spike_bytes = 0;  // transient working set while this layer runs (see docs)
  double microbatch_ms() const { return fwd_ms + bwd_ms + tp_comm_ms + sp_comm_ms + dp_comm_ms; }
  double step_ms() const { return grad_sync_ms + optimizer_ms; }
};

// Cost of a layer of type `lt` under `s` with micro-batch size `micro_batch` (samples).
// Assumes the strategy was checked (degrees divide, micro-batch divisible by dp).
LayerCost layer_cost(const ModelTables& model, const LayerTypeProfile& lt, const CommModel& comm,
                     const Strategy& s, int32_t stage_first, int32_t stage_size,
                     int32_t micro_batch);
// Embedding (first_stage) or head (last stage) part under strategy `s`.
LayerCost embedding_cost(const ModelTables& model, const CommModel& comm, const Strategy& s,
                         int32_t stage_first, int32_t stage_size, int32_t micro_batch,
                         bool head, bool tied_copy);

// ---- layouts of the activation between layers -----------------------------------------------
// Which samples and sequence positions each device of a stage holds (replicas allowed).
struct Layout {
  int32_t n_batch = 1, n_seq = 1, replicas = 1;
  bool consecutive = true;  // device order (batch, seq, replica) vs (replica, seq, batch)
  // Both device orders place every device alike when at most one of the three counts
  // exceeds 1 (e.g. n_batch = 1 with n_seq > 1 and replicas > 1 is not such a case).
  bool order_is_moot() const { return (n_batch > 1) + (n_seq > 1) + (replicas > 1) <= 1; }
  bool operator==(const Layout& o) const {
    return n_batch == o.n_batch && n_seq == o.n_seq && replicas == o.replicas &&
           (consecutive == o.consecutive || order_is_moot());
  }
};
Layout layout_of(const Strategy& s, int32_t stage_size);
// Layout of the embedding output / head input: as layout_of, except that Megatron-SP runs the
// embedding and head as plain tensor parallelism (replicated over tp) and the neighbouring
// redistribution splits or gathers the sequence.
Layout embedding_layout(const Strategy& s, int32_t stage_size);
// Whether the head keeps its own copy of a tied embedding weight: across pipeline stages only
// (at pp = 1 the runtime shares one tensor; under ZeRO-2/3 embedding and head form one unit).
bool head_keeps_tied_copy(const Strategy& embedding, int32_t pp);
// Pipeline-boundary layout: batch sharded over gcd(micro_batch, stage_size) devices, the
// sequence over the rest; no replicas.
Layout boundary_layout(int32_t stage_size, int32_t micro_batch);
// Forward + backward time of moving one micro-batch's activation (carry_bytes_per_sample per
// sample) from layout `a` to layout `b` inside a stage (one all-to-all over the stage group each
// way); 0 when a == b.
double redistribution_ms(const CommModel& comm, const Layout& a, const Layout& b,
                         int32_t stage_first, int32_t stage_size, int32_t micro_batch,
                         int64_t carry_bytes_per_sample);
// Largest number of elements (in units of one token-sample slot) a device receives when moving
// from `a` to `b`, as a fraction of the micro-batch: exposed for tests.
double redistribution_recv_fraction(const Layout& a, const Layout& b, int32_t stage_size,
                                    int32_t micro_batch, int64_t seq_len);

// ---- pipelines ------------------------------------------------------------------------------
// Micro-batches whose activations chunk `chunk` (0-based among the pp*v chunks) holds at the
// peak, for the given schedule. For 1F1B: min(m, pp - stage); GPipe: m; interleaved: counted
// from the warm-up order (see docs).
int32_t inflight_microbatches(Schedule schedule, int32_t pp, int32_t v, int32_t m, int32_t chunk);
// Step time from per-rank per-micro-batch work W_r and per-step tails E_r:
//   X_r = W_r + E_r / (m + (pp - 1) / v);   step = sum_r X_r / v + (m - 1 / v) * max_r X_r.
double amortisation(int32_t pp, int32_t v, int32_t m);  // 1 / (m + (pp-1)/v)
double pipeline_step_ms(const std::vector<double>& stage_x_ms, int32_t v, int32_t m);

// Checks a plan against the model and hardware; throws std::invalid_argument naming the field.
void validate_plan(const ModelTables& model, const PlanSpec& plan);
// Predicts time and memory of a full plan.
Prediction evaluate_plan(const ModelTables& model, const HardwareTables& hw, const PlanSpec& plan);

}  // namespace galvatron
