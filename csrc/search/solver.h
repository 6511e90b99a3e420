// Internal: the per-task solver shared by task_solver.cpp (setup, sweeps, the task loop) and
// solver_plans.cpp (bounds, split tables, plans for v = 1 and interleaved schedules).
#pragma once
#include <algorithm>
#include <atomic>
#include <limits>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "search/search.h"
#include "search/split.h"
#include "search/stage_terms.h"
#include "search/sweep.h"
#include "search/task_solver.h"

namespace galvatron {
namespace detail {

inline constexpr double kInf = std::numeric_limits<double>::infinity();
inline constexpr int64_t kNoCap = std::numeric_limits<int64_t>::max() / 4;

struct EmbChoice {
  int32_t strategy = 0;
  LayerCost embed, head;
};

// What the embedding (on the first chunk) and the head (on the last chunk) add to a rank:
// states and in-flight activations, a transient floor, and time (the tied weight's gradient
// all-reduce is charged to both ends when they are on different ranks).
struct EndTerms {
  int64_t mem = 0, spike = 0;
  double ms = 0;
  void add(const LayerCost& c, int32_t inflight, double kappa, double per_step_extra_ms) {
    mem += c.param_bytes + c.grad_bytes + c.optimizer_bytes + c.act_bytes * inflight;
    spike = std::max(spike, c.spike_bytes);
    ms += c.microbatch_ms() + kappa * (c.step_ms() + per_step_extra_ms);
  }
};

struct Chunk {
  int32_t rank = 0, stage_first = 0, inflight = 1;
  std::unique_ptr<Transitions> tr;
  std::vector<std::vector<Option>> options;  // active options per layer type, sorted by class
  std::vector<std::vector<Option>> pruned;   // without options dominated inside their class
  std::vector<std::vector<Option>> all;      // every valid strategy (for uniform plans)
  int32_t boundary_cls = 0, free_cls = 0;
  std::vector<int32_t> emb_cls;              // per embedding choice
  std::map<std::pair<int32_t, int32_t>, Sweep> sweeps;  // (start, start class)
  std::map<std::tuple<int32_t, int32_t, int32_t, int32_t, int64_t>, Front> reads;
};

class Solver {
 public:
  Solver(const ModelTables& model, const HardwareTables& hw, const SearchOptions& opt, const Task& task)
      : model_(model), hw_(hw), opt_(opt), task_(task), comm_(hw),
        ctx_(make_stage_context(model, comm_, opt.world_size, task.pp, task.v, task.schedule, task.m,
                                task.global_batch / task.m)),
        layers_(static_cast<int32_t>(model.layer_type_of.size())) {
    homogeneous_ = std::all_of(model.layer_type_of.begin(), model.layer_type_of.end(),
                               [&](int32_t t) { return t == model.layer_type_of[0]; });
    strategies_ = enumerate_strategies(opt, ctx_.stage_size, false);
    emb_strategies_ = enumerate_strategies(opt, ctx_.stage_size, true);
    result_.strategies = static_cast<int64_t>(strategies_.size());
  }

  TaskResult run(bool min_memory, std::atomic<double>* shared_best);
  double uniform_throughput() {
    if (task_.v > 1 || !setup()) return 0.0;
    double best = kInf;
    for (size_t ei = 0; ei < embs_.size(); ++ei) best = std::min(best, uniform_bound(embs_[ei], ei));
    return best < kInf ? task_.global_batch / (best / 1000.0) : 0.0;
  }

 private:
  double uniform_bound(const EmbChoice& e, size_t ei);  // objective of the best uniform even plan
  double step_bound() const;  // objective a plan must beat (with slack), from all sources
  bool fits_batch(const Strategy& s) const;
  bool valid_for(const Strategy& s, const LayerTypeProfile* lt) const;
  bool setup();                 // false when no strategy is valid
  void activate(int32_t uniform);  // options: all (pruned) or only strategy `uniform`; clears caches
  const Sweep& sweep(int32_t c, int32_t start, int32_t start_cls, int32_t len);
  const Front& reading(int32_t c, int32_t start, int32_t start_cls, int32_t len, int32_t end_cls,
                       int64_t floor, bool collapse);
  int64_t base_budget() const {
    return min_memory_ ? kNoCap : opt_.memory_budget_bytes - hw_.framework_overhead_bytes - hw_.comm_buffer_bytes;
  }
  // free_ends: the first rank starts and the last rank ends in the free class (a lower bound).
  void fill_cells(const EmbChoice& e, size_t ei, SplitTables& t, bool ends_only, bool free_ends = false);
  double lower_bound_v1(const EmbChoice& e, size_t ei);
  // No plan with every layer on strategy u (any strategy when u < 0) does better.
  double uniform_lower_bound(int32_t u) const;
  void solve_v1(const EmbChoice& e, size_t ei);
  void solve_interleaved(const EmbChoice& e, size_t ei);
  void reconstruct(int32_t c, int32_t start, int32_t start_cls, int32_t len, const Entry& read, PlanSpec& plan);
  PlanSpec base_plan(int32_t emb_strategy) const;

  const ModelTables& model_;
  const HardwareTables& hw_;
  const SearchOptions& opt_;
  const Task task_;
  const CommModel comm_;
  const StageContext ctx_;
  const int32_t layers_;
  bool homogeneous_ = false, min_memory_ = false;
  double own_bound_ = kInf;  // best objective known inside this task
  std::atomic<double>* shared_best_ = nullptr;
  std::vector<Strategy> strategies_, emb_strategies_;
  std::vector<EmbChoice> embs_;
  std::vector<Chunk> chunks_;
  std::unique_ptr<SplitTables> tables_;  // middle ranks filled once, first/last rank per embedding
  TaskResult result_;
};

}  // namespace detail
}  // namespace galvatron
