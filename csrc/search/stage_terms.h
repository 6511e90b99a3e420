// Terms shared by evaluate_plan() and the search, so both compose a plan's cost identically.
#pragma once
#include <cstdint>
#include <vector>

#include "search/cost_model.h"

namespace galvatron {

struct StageContext {
  const ModelTables& model;
  const CommModel& comm;
  int32_t world_size = 1, pp = 1, v = 1, m = 1, micro_batch = 1, stage_size = 1;
  Schedule schedule = Schedule::k1F1B;
  double kappa = 1.0;  // per-step tail amortisation, see amortisation()
  Layout boundary;     // activation layout at pipeline-chunk boundaries
};

StageContext make_stage_context(const ModelTables& model, const CommModel& comm, int32_t world_size,
                                int32_t pp, int32_t v, Schedule schedule, int32_t m, int32_t mb);
// Output carry bytes per sample of layer `layer` (the next layer's input, or the head's input).
int64_t layer_out_carry(const ModelTables& model, size_t layer);
// Point-to-point time of one micro-batch's boundary activation between two pipeline ranks.
double p2p_ms(const StageContext& ctx, int32_t rank, int32_t other_rank, int64_t carry_bytes);
// p2p charged to a chunk: activations to the next chunk, gradients to the previous one.
double chunk_edge_ms(const StageContext& ctx, int32_t chunk, int64_t first_carry, int64_t last_out_carry);
// Per-step all-reduce of a tied embedding/head weight between the first and last rank.
double tied_sync_ms(const StageContext& ctx, const Strategy& emb);
// Fills step time, per-rank times and the breakdown from per-rank work W (per micro-batch),
// per-step tails E and per-micro-batch parts.
Prediction finish_prediction(const StageContext& ctx, const HardwareTables& hw, const std::vector<double>& w,
                             const std::vector<double>& e, const std::vector<TimeBreakdown>& parts,
                             Prediction out);

}  // namespace galvatron
