// Whole-plan prediction: composes layer costs, redistribution, p2p and the pipeline formula.
// The search composes exactly the same terms (search/stage_terms.h), so a searched plan's
// evaluate_plan() equals the objective the search optimised.
#include <algorithm>
#include <cmath>

#include "search/cost_model.h"
#include "search/stage_terms.h"

namespace galvatron {

StageContext make_stage_context(const ModelTables& model, const CommModel& comm, int32_t world_size,
                                int32_t pp, int32_t v, Schedule schedule, int32_t m, int32_t mb) {
  StageContext ctx{model, comm, 1, 1, 1, 1, 1, 1, Schedule::k1F1B, 1.0, Layout{}};
  ctx.world_size = world_size;
  ctx.pp = pp;
  ctx.v = v;
  ctx.schedule = schedule;
  ctx.m = m;
  ctx.micro_batch = mb;
  ctx.stage_size = world_size / pp;
  ctx.kappa = amortisation(pp, v, m);
  ctx.boundary = boundary_layout(ctx.stage_size, mb);
  return ctx;
}

int64_t layer_out_carry(const ModelTables& model, size_t layer) {
  return layer + 1 < model.layer_type_of.size()
             ? model.layer_types[model.layer_type_of[layer + 1]].carry_bytes_per_sample
             : model.embedding.carry_bytes_per_sample;
}

double p2p_ms(const StageContext& ctx, int32_t rank, int32_t other_rank, int64_t carry_bytes) {
  if (ctx.pp == 1) return 0.0;
  const int32_t lo = std::min(rank, other_rank), hi = std::max(rank, other_rank);
  const Placement pl = ctx.comm.placement(lo * ctx.stage_size, 2, (hi - lo) * ctx.stage_size);
  const double bytes = static_cast<double>(carry_bytes) * ctx.micro_batch / ctx.stage_size;
  return ctx.comm.time_ms(Op::kP2P, 2, pl, bytes);
}

double chunk_edge_ms(const StageContext& ctx, int32_t chunk, int64_t first_carry, int64_t last_out_carry) {
  const int32_t chunks = ctx.pp * ctx.v;
  const int32_t rank = chunk % ctx.pp;
  double t = 0;
  if (chunk + 1 < chunks) t += p2p_ms(ctx, rank, (chunk + 1) % ctx.pp, last_out_carry);  // activations out
  if (chunk > 0) t += p2p_ms(ctx, rank, (chunk - 1) % ctx.pp, first_carry);              // gradients back
  return t;
}

double tied_sync_ms(const StageContext& ctx, const Strategy& emb) {
  const int64_t tied = ctx.model.embedding.tied_param_count;
  if (ctx.pp == 1 || tied == 0) return 0.0;
  const Placement pl = ctx.comm.placement(0, 2, (ctx.pp - 1) * ctx.stage_size);
  return ctx.comm.time_ms(Op::kAllReduce, 2, pl, 4.0 * static_cast<double>((tied + emb.tp - 1) / emb.tp));
}

namespace {

void add_memory(MemoryBreakdown& mem, const LayerCost& c, int32_t inflight) {
  mem.param_bytes += c.param_bytes;
  mem.grad_bytes += c.grad_bytes;
  mem.optimizer_bytes += c.optimizer_bytes;
  mem.activation_bytes += c.act_bytes * inflight;
  mem.transient_bytes = std::max(mem.transient_bytes, c.spike_bytes);
}

void add_timing(LayerTiming& t, TimeBreakdown& part, const LayerCost& c) {
  part.compute_ms += c.fwd_ms + c.bwd_ms;
  part.tp_comm_ms += c.tp_comm_ms;
  part.sp_comm_ms += c.sp_comm_ms;
  part.dp_comm_ms += c.dp_comm_ms;
  t.fwd_ms += c.fwd_ms;
  t.bwd_ms += c.bwd_ms;
  t.tp_comm_ms += c.tp_comm_ms;
  t.sp_comm_ms += c.sp_comm_ms;
  t.dp_comm_ms += c.dp_comm_ms;
  t.per_step_ms += c.step_ms();
  part.grad_sync_ms += c.grad_sync_ms;  // per step (not multiplied by micro-batches)
  part.optimizer_ms += c.optimizer_ms;
}

}  // namespace

Prediction evaluate_plan(const ModelTables& model, const HardwareTables& hw, const PlanSpec& plan) {
  validate_hardware(hw);
  validate_plan(model, plan);
  const CommModel comm(hw);
  const int32_t m = plan.num_microbatches, mb = plan.global_batch_size / m;
  const StageContext ctx = make_stage_context(model, comm, plan.world_size, plan.pp, plan.virtual_stages,
                                              plan.schedule, m, mb);
  const int32_t chunks = plan.pp * plan.virtual_stages;
  Prediction out;
  out.stage_memory.assign(plan.pp, MemoryBreakdown{});
  out.layer_timing.assign(plan.layers.size(), LayerTiming{});
  std::vector<double> w(plan.pp, 0.0), e(plan.pp, 0.0);
  std::vector<TimeBreakdown> parts(plan.pp);
  const Layout emb_layout = embedding_layout(plan.embedding, ctx.stage_size);
  size_t layer = 0;
  for (int32_t c = 0; c < chunks; ++c) {
    const int32_t r = c % plan.pp, first = r * ctx.stage_size;
    const int32_t inflight = inflight_microbatches(plan.schedule, plan.pp, plan.virtual_stages, m, c);
    Layout prev = c == 0 ? emb_layout : ctx.boundary;
    const size_t begin = layer;
    for (int32_t k = 0; k < plan.stage_layers[c]; ++k, ++layer) {
      const auto& lt = model.layer_types[model.layer_type_of[layer]];
      const Strategy& s = plan.layers[layer];
      const LayerCost cost = layer_cost(model, lt, comm, s, first, ctx.stage_size, mb);
      const Layout cur = layout_of(s, ctx.stage_size);
      const double redis = redistribution_ms(comm, prev, cur, first, ctx.stage_size, mb, lt.carry_bytes_per_sample);
      prev = cur;
      add_memory(out.stage_memory[r], cost, inflight);
      LayerTiming& lt_out = out.layer_timing[layer];
      add_timing(lt_out, parts[r], cost);
      lt_out.redistribution_ms = redis;
      w[r] += cost.microbatch_ms() + redis;
      e[r] += cost.step_ms();
      parts[r].redistribution_ms += redis;
    }
    const Layout end = c + 1 == chunks ? emb_layout : ctx.boundary;
    const double redis = redistribution_ms(comm, prev, end, first, ctx.stage_size, mb, layer_out_carry(model, layer - 1));
    const double edge = chunk_edge_ms(ctx, c, model.layer_types[model.layer_type_of[begin]].carry_bytes_per_sample,
                                      layer_out_carry(model, layer - 1));
    out.layer_timing[layer - 1].redistribution_ms += redis;
    w[r] += redis + edge;
    parts[r].redistribution_ms += redis;
    parts[r].p2p_ms += edge;
  }
  // Embedding on the first chunk's rank, head on the last chunk's rank.
  for (int head = 0; head < 2; ++head) {
    const int32_t c = head ? chunks - 1 : 0, r = c % plan.pp;
    const LayerCost cost = embedding_cost(model, comm, plan.embedding, r * ctx.stage_size, ctx.stage_size, mb,
                                          head != 0, head_keeps_tied_copy(plan.embedding, plan.pp));
    add_memory(out.stage_memory[r], cost, inflight_microbatches(plan.schedule, plan.pp, plan.virtual_stages, m, c));
    add_timing(out.embedding_timing, parts[r], cost);
    w[r] += cost.microbatch_ms();
    const double tied = tied_sync_ms(ctx, plan.embedding);
    e[r] += cost.step_ms() + tied;
    parts[r].grad_sync_ms += tied;
  }
  return finish_prediction(ctx, hw, w, e, parts, std::move(out));
}

Prediction finish_prediction(const StageContext& ctx, const HardwareTables& hw, const std::vector<double>& w,
                             const std::vector<double>& e, const std::vector<TimeBreakdown>& parts,
                             Prediction out) {
  std::vector<double> x(ctx.pp);
  for (int32_t r = 0; r < ctx.pp; ++r) {
    x[r] = w[r] + ctx.kappa * e[r];
    out.stage_memory[r].buffer_bytes = hw.comm_buffer_bytes;
    out.stage_memory[r].overhead_bytes = hw.framework_overhead_bytes;
  }
  out.stage_time_ms = x;
  out.step_time_ms = pipeline_step_ms(x, ctx.v, ctx.m);
  const int32_t crit = static_cast<int32_t>(std::max_element(x.begin(), x.end()) - x.begin());
  out.critical_stage = crit;
  // The critical rank's step: m micro-batches of work, its per-step tail, and the rest is bubble.
  const TimeBreakdown& p = parts[crit];
  TimeBreakdown& b = out.breakdown;
  b.compute_ms = ctx.m * p.compute_ms;
  b.tp_comm_ms = ctx.m * p.tp_comm_ms;
  b.sp_comm_ms = ctx.m * p.sp_comm_ms;
  b.dp_comm_ms = ctx.m * p.dp_comm_ms;
  b.p2p_ms = ctx.m * p.p2p_ms;
  b.redistribution_ms = ctx.m * p.redistribution_ms;
  // The per-step tail e[crit] = exposed gradient sync + optimizer step, each in its own field.
  b.grad_sync_ms = p.grad_sync_ms;
  b.optimizer_ms = p.optimizer_ms;
  const double busy = b.compute_ms + b.tp_comm_ms + b.sp_comm_ms + b.dp_comm_ms + b.p2p_ms +
                      b.redistribution_ms + b.grad_sync_ms + b.optimizer_ms;
  b.bubble_ms = std::max(0.0, out.step_time_ms - busy);
  return out;
}

}  // namespace galvatron
