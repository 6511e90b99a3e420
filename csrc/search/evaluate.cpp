// Validation of profiles and plans, pipeline formulas, and the whole-plan prediction.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

#include "search/cost_model.h"

namespace galvatron {

namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

std::string at_layer(int i) { return "layers[" + std::to_string(i) + "]"; }

void require_degrees(const std::vector<int32_t>& degrees, const std::string& field) {
  if (degrees.empty()) fail(field + ": at least one shard degree is needed");
  for (size_t i = 0; i < degrees.size(); ++i) {
    if (degrees[i] < 1 || (i > 0 && degrees[i] <= degrees[i - 1])) {
      fail(field + ": shard degrees must be positive and strictly ascending");
    }
  }
}

// A per-degree table: one entry per degree; complete tables have every entry >= 0, others
// may mark a missing degree with a negative entry.
template <typename T>
void require_table(const std::vector<T>& t, size_t n, const std::string& field, bool complete = true) {
  if (t.size() != n) {
    fail(field + " has " + std::to_string(t.size()) + " entries; need one per shard degree (" +
         std::to_string(n) + ")");
  }
  for (size_t i = 0; i < t.size(); ++i) {
    if (complete ? !(t[i] >= 0) : std::isnan(static_cast<double>(t[i]))) {
      fail(field + "[" + std::to_string(i) + "] must be >= 0");
    }
  }
}

}  // namespace

void validate_hardware(const HardwareTables& hw) {
  if (hw.num_nodes < 1) fail("num_nodes must be >= 1");
  if (hw.gpus_per_node < 1) fail("gpus_per_node must be >= 1");
  if (!(hw.overlap_slowdown >= 1.0)) fail("overlap_slowdown must be >= 1");
  if (!(hw.optimizer_ms_per_param >= 0)) fail("optimizer_ms_per_param must be >= 0");
  if (hw.framework_overhead_bytes < 0) fail("framework_overhead_bytes must be >= 0");
  if (hw.comm_buffer_bytes < 0) fail("comm_buffer_bytes must be >= 0");
  if (hw.inter_node_rings < 1) fail("inter_node_rings must be >= 1");
  for (size_t i = 0; i < hw.collectives.size(); ++i) {
    const auto& e = hw.collectives[i];
    const std::string f = "collectives[" + std::to_string(i) + "]";
    if (e.group_size < 2) fail(f + ".group_size must be >= 2");
    if (!(e.bandwidth_gbps > 0)) fail(f + ".bandwidth_gbps must be > 0");
    if (!(e.alpha_ms >= 0)) fail(f + ".alpha_ms must be >= 0");
  }
}

void validate_model(const ModelTables& model) {
  if (model.layer_types.empty()) fail("layer_types: at least one layer type is needed");
  if (model.layer_type_of.empty()) fail("layer_type_of: the model has no layers");
  if (model.compute_bytes != 2 && model.compute_bytes != 4) fail("compute_bytes must be 2 or 4");
  for (size_t i = 0; i < model.layer_type_of.size(); ++i) {
    const int32_t t = model.layer_type_of[i];
    if (t < 0 || t >= static_cast<int32_t>(model.layer_types.size())) {
      fail("layer_type_of[" + std::to_string(i) + "]=" + std::to_string(t) + " is not a layer type index");
    }
  }
  for (size_t i = 0; i < model.layer_types.size(); ++i) {
    const auto& lt = model.layer_types[i];
    const std::string f = "layer_types[" + std::to_string(i) + "] (" + lt.name + ")";
    if (lt.param_count < 0) fail(f + ".param_count must be >= 0");
    if (lt.carry_bytes_per_sample <= 0) fail(f + ".carry_bytes_per_sample must be > 0");
    if (lt.num_heads < 1 || lt.num_kv_heads < 1) fail(f + ": head counts must be >= 1");
    if (lt.seq_len < 1) fail(f + ".seq_len must be >= 1");
    require_degrees(lt.degrees, f + ".degrees");
    const size_t n = lt.degrees.size();
    require_table(lt.fwd_ms_per_sample, n, f + ".fwd_ms_per_sample");
    require_table(lt.bwd_ms_per_sample, n, f + ".bwd_ms_per_sample");
    require_table(lt.act_bytes_per_sample[0], n, f + ".act_bytes_per_sample[none]");
    for (int k = 1; k < 3; ++k) {
      if (!lt.act_bytes_per_sample[k].empty()) {
        require_table(lt.act_bytes_per_sample[k], n, f + ".act_bytes_per_sample[" + std::to_string(k) + "]", false);
      }
    }
    // selective checkpointing: optional tables (empty: not available), negative entries missing
    for (int k = 0; k < 3; ++k) {
      if (!lt.selective_act_bytes_per_sample[k].empty()) {
        require_table(lt.selective_act_bytes_per_sample[k], n,
                      f + ".selective_act_bytes_per_sample[" + std::to_string(k) + "]", false);
      }
    }
    if (!lt.selective_recompute_ms_per_sample.empty()) {
      require_table(lt.selective_recompute_ms_per_sample, n, f + ".selective_recompute_ms_per_sample", false);
    }
    for (int k = 0; k < 3; ++k) {
      if (!lt.fsdp_act_bytes_per_sample[k].empty()) {
        require_table(lt.fsdp_act_bytes_per_sample[k], n,
                      f + ".fsdp_act_bytes_per_sample[" + std::to_string(k) + "]", false);
      }
      if (!lt.fsdp_selective_act_bytes_per_sample[k].empty()) {
        require_table(lt.fsdp_selective_act_bytes_per_sample[k], n,
                      f + ".fsdp_selective_act_bytes_per_sample[" + std::to_string(k) + "]", false);
      }
    }
    if (lt.fsdp_carry_bytes_per_sample < 0) fail(f + ".fsdp_carry_bytes_per_sample must be >= 0");
  }
  const auto& e = model.embedding;
  if (e.embed_param_count < 0 || e.head_param_count < 0 || e.tied_param_count < 0) {
    fail("embedding: parameter counts must be >= 0");
  }
  if (e.carry_bytes_per_sample <= 0) fail("embedding.carry_bytes_per_sample must be > 0");
  require_degrees(e.degrees, "embedding.degrees");
  const size_t n = e.degrees.size();
  require_table(e.embed_fwd_ms_per_sample, n, "embedding.embed_fwd_ms_per_sample");
  require_table(e.embed_bwd_ms_per_sample, n, "embedding.embed_bwd_ms_per_sample");
  require_table(e.head_fwd_ms_per_sample, n, "embedding.head_fwd_ms_per_sample");
  require_table(e.head_bwd_ms_per_sample, n, "embedding.head_bwd_ms_per_sample");
  require_table(e.embed_act_bytes_per_sample, n, "embedding.embed_act_bytes_per_sample");
  require_table(e.head_act_bytes_per_sample, n, "embedding.head_act_bytes_per_sample");
  if (!e.head_transient_bytes_per_sample.empty()) {
    require_table(e.head_transient_bytes_per_sample, n, "embedding.head_transient_bytes_per_sample");
  }
}

void validate_magnitudes(const ModelTables& model, int64_t max_global_batch) {
  // Memory is summed in int64 bytes: bound every sum the cost model can form (all layers'
  // activations for the whole batch, model states at 16 bytes per parameter plus transient
  // copies) well inside int64, so no input can overflow it. Doubles (times) cannot overflow at
  // these magnitudes once the profile's own values are finite and bounded.
  double bytes = 0;
  auto largest = [](const std::vector<int64_t>& t) {
    int64_t m = 0;
    for (int64_t v : t) m = std::max(m, v);
    return static_cast<double>(m);
  };
  for (int32_t t : model.layer_type_of) {
    const LayerTypeProfile& lt = model.layer_types[static_cast<size_t>(t)];
    double per_sample = static_cast<double>(lt.carry_bytes_per_sample) + static_cast<double>(lt.ulysses_bytes_per_sample);
    for (const auto& table : lt.act_bytes_per_sample) per_sample += largest(table);
    bytes += per_sample * static_cast<double>(max_global_batch) + 32.0 * static_cast<double>(lt.param_count);
  }
  const EmbeddingProfile& e = model.embedding;
  bytes += (static_cast<double>(e.carry_bytes_per_sample) + largest(e.embed_act_bytes_per_sample) +
            largest(e.head_act_bytes_per_sample)) * static_cast<double>(max_global_batch);
  bytes += 32.0 * (static_cast<double>(e.embed_param_count) + static_cast<double>(e.head_param_count) +
                   2.0 * static_cast<double>(e.tied_param_count));
  constexpr double kLimit = 1152921504606846976.0;  // 2^60 bytes (1 EiB): 8x below int64's range
  if (!(bytes <= kLimit)) {
    fail("global_batch_size " + std::to_string(max_global_batch) + ": the model's memory terms at this batch size "
         "reach about 2^" + std::to_string(static_cast<int>(std::log2(bytes))) +
         " bytes, beyond the 2^60 bytes the cost model accepts; use a smaller batch or check the profile's "
         "parameter counts and bytes per sample");
  }
}

static void validate_strategy(const ModelTables& model, const Strategy& s, int32_t stage_size,
                              int32_t micro_batch, const LayerTypeProfile* lt, const std::string& f) {
  if (s.tp < 1 || s.sp < 1) fail(f + ": tp and sp must be >= 1");
  if (stage_size % (s.tp * s.sp) != 0) {
    fail(f + ": tp*sp=" + std::to_string(s.tp * s.sp) + " does not divide the " +
         std::to_string(stage_size) + " devices of a pipeline stage");
  }
  if ((s.sp_kind == SpKind::kUlysses) != (s.sp > 1)) fail(f + ": sp > 1 if and only if sp_kind is ulysses");
  if (s.sp_kind == SpKind::kMegatron && s.tp < 2) fail(f + ": sp_kind megatron needs tp >= 2");
  const int32_t dp = stage_size / (s.tp * s.sp);
  if (micro_batch % dp != 0) {
    fail(f + ": micro-batch size " + std::to_string(micro_batch) + " is not divisible by dp=" + std::to_string(dp));
  }
  const int64_t seq = lt != nullptr ? lt->seq_len : model.embedding.seq_len;
  const int64_t seq_shards = int64_t{s.sp} * (s.sp_kind == SpKind::kMegatron ? s.tp : 1);
  if (seq % seq_shards != 0) {
    fail(f + ": the sequence length " + std::to_string(seq) + " is not divisible by its " +
         std::to_string(seq_shards) + " sequence shards");
  }
  const int64_t degree = int64_t{s.tp} * s.sp;
  if (lt == nullptr) {
    if (degree_index(model.embedding.degrees, degree) < 0) {
      fail(f + ": the embedding/head profile has no entries for shard degree " + std::to_string(degree));
    }
    return;
  }
  if (!lt->allow_sequence_parallel && s.sp_kind != SpKind::kNone) {
    fail(f + ": layer type " + lt->name + " needs the whole sequence; accepted sp_kind: none");
  }
  const int64_t heads_split = int64_t{s.tp} * s.sp;
  if (lt->num_heads % heads_split != 0 || lt->num_kv_heads % heads_split != 0) {
    fail(f + ": tp*sp=" + std::to_string(heads_split) + " must divide the head counts (" +
         std::to_string(lt->num_heads) + " heads, " + std::to_string(lt->num_kv_heads) + " kv heads) of layer type " + lt->name);
  }
  const int32_t i = degree_index(lt->degrees, degree);
  const auto& act = lt->act_bytes_per_sample[static_cast<int>(s.sp_kind)];
  if (i < 0 || static_cast<size_t>(i) >= act.size() || act[i] < 0) {
    fail(f + ": the profile of layer type " + lt->name + " has no entries for shard degree " +
         std::to_string(heads_split) + " (sp_kind " + std::to_string(static_cast<int>(s.sp_kind)) + ")");
  }
  if (s.checkpoint == Checkpoint::kSelective && !lt->has_selective(s.sp_kind, degree)) {
    fail(f + ": checkpoint 'selective' needs selective_act_bytes_per_sample and "
         "selective_recompute_ms_per_sample for shard degree " + std::to_string(heads_split) +
         " in the profile of layer type " + lt->name + " (accepted here: 'none', 'full')");
  }
}

void validate_plan(const ModelTables& model, const PlanSpec& plan) {
  validate_model(model);
  validate_magnitudes(model, plan.global_batch_size);
  if (plan.world_size < 1) fail("world_size must be >= 1");
  if (plan.pp < 1 || plan.world_size % plan.pp != 0) fail("pp=" + std::to_string(plan.pp) + " must divide world_size");
  if (plan.virtual_stages < 1) fail("virtual_stages must be >= 1");
  if ((plan.schedule == Schedule::kInterleaved1F1B) != (plan.virtual_stages > 1)) {
    fail("virtual_stages > 1 if and only if schedule is interleaved_1f1b");
  }
  if (plan.num_microbatches < 1 || plan.global_batch_size < 1 ||
      plan.global_batch_size % plan.num_microbatches != 0) {
    fail("global_batch_size must be a positive multiple of num_microbatches");
  }
  const size_t chunks = static_cast<size_t>(plan.pp) * plan.virtual_stages;
  if (plan.stage_layers.size() != chunks) fail("stage_layers must have pp*virtual_stages entries");
  int64_t total = 0;
  for (int32_t n : plan.stage_layers) {
    if (n < 1) fail("stage_layers entries must be >= 1");
    total += n;
  }
  if (plan.layers.size() != model.layer_type_of.size() || total != static_cast<int64_t>(plan.layers.size())) {
    fail("layers: the plan has " + std::to_string(plan.layers.size()) + " layers (stage_layers sum " +
         std::to_string(total) + ") but the model has " + std::to_string(model.layer_type_of.size()));
  }
  const int32_t stage_size = plan.world_size / plan.pp;
  const int32_t mb = plan.global_batch_size / plan.num_microbatches;
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    validate_strategy(model, plan.layers[i], stage_size, mb, &model.layer_types[model.layer_type_of[i]], at_layer(static_cast<int>(i)));
  }
  validate_strategy(model, plan.embedding, stage_size, mb, nullptr, "embedding");
  if (plan.embedding.checkpoint != Checkpoint::kNone) fail("embedding.checkpoint is not supported; accepted: none");
  if (plan.pp > 1) {
    const Layout b = boundary_layout(stage_size, mb);
    for (const auto& lt : model.layer_types) {
      if (lt.seq_len % b.n_seq != 0) {
        fail("micro-batch size " + std::to_string(mb) + ": between pipeline stages the activation is split over " +
             std::to_string(stage_size) + " devices, which needs the sequence length " + std::to_string(lt.seq_len) +
             " to be divisible by " + std::to_string(b.n_seq) + " (use a micro-batch size that is a multiple of " +
             std::to_string(stage_size) + ")");
      }
    }
  }
}

int32_t inflight_microbatches(Schedule schedule, int32_t pp, int32_t v, int32_t m, int32_t chunk) {
  const int32_t rank = chunk % pp;
  switch (schedule) {
    case Schedule::kGpipe: return m;
    case Schedule::k1F1B: return std::min(m, pp - rank);
    case Schedule::kInterleaved1F1B: {
      // Forwards issued before the first backward on this rank: (v-1)*pp + 2*(pp-1-rank) + 1.
      const int64_t total = int64_t{m} * v;
      const int64_t k_end = std::min<int64_t>(total, int64_t{v - 1} * pp + 2 * (pp - 1 - rank) + 1);
      const int32_t local = chunk / pp;
      int32_t count = 0;
      for (int64_t k = 0; k < k_end; ++k) count += ((k / pp) % v) == local;
      return count;
    }
  }
  return m;
}

double amortisation(int32_t pp, int32_t v, int32_t m) {
  return 1.0 / (static_cast<double>(m) + static_cast<double>(pp - 1) / static_cast<double>(v));
}

double pipeline_step_ms(const std::vector<double>& x, int32_t v, int32_t m) {
  double sum = 0, mx = 0;
  for (double t : x) {
    sum += t;
    mx = std::max(mx, t);
  }
  return sum / v + (static_cast<double>(m) - 1.0 / v) * mx;
}

}  // namespace galvatron
