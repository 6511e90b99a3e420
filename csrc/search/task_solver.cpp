#include "search/task_solver.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "search/search.h"
#include "search/solver.h"

namespace galvatron {
namespace detail {

bool Solver::fits_batch(const Strategy& s) const {
  return ctx_.micro_batch % (ctx_.stage_size / (s.tp * s.sp)) == 0;
}

bool Solver::valid_for(const Strategy& s, const LayerTypeProfile* lt) const {
  if (!fits_batch(s)) return false;
  const int64_t shards = int64_t{s.sp} * (s.sp_kind == SpKind::kMegatron ? s.tp : 1);
  const int64_t seq = lt != nullptr ? lt->seq_len : model_.embedding.seq_len;
  if (seq % shards != 0) return false;
  const int64_t deg = int64_t{s.tp} * s.sp;
  if (lt == nullptr) return degree_index(model_.embedding.degrees, deg) >= 0;
  if (lt->num_heads % (s.tp * s.sp) != 0 || lt->num_kv_heads % (s.tp * s.sp) != 0) return false;
  if (!lt->allow_sequence_parallel && s.sp_kind != SpKind::kNone) return false;
  if (s.checkpoint == Checkpoint::kSelective && !lt->has_selective(s.sp_kind, deg)) {
    return false;  // the profile does not describe selective checkpointing for this layer type
  }
  const int32_t i = degree_index(lt->degrees, deg);
  const auto& act = lt->act_bytes_per_sample[static_cast<int>(s.sp_kind)];
  return i >= 0 && static_cast<size_t>(i) < act.size() && act[i] >= 0;
}

void Solver::activate(int32_t uniform) {
  tables_.reset();
  for (Chunk& ch : chunks_) {
    ch.sweeps.clear();
    ch.reads.clear();
    if (uniform < 0) {
      ch.options = ch.pruned;
      continue;
    }
    for (size_t t = 0; t < ch.all.size(); ++t) {
      ch.options[t].clear();
      for (const Option& o : ch.all[t]) {
        if (o.strategy == uniform) ch.options[t].push_back(o);
      }
    }
  }
}

bool Solver::setup() {
  chunks_.clear();
  tables_.reset();
  embs_.clear();
  const int32_t nchunks = task_.pp * task_.v;
  const int32_t last = nchunks - 1;
  for (size_t k = 0; k < emb_strategies_.size(); ++k) {
    const Strategy& s = emb_strategies_[k];
    if (!valid_for(s, nullptr)) continue;
    EmbChoice e;
    e.strategy = static_cast<int32_t>(k);
    e.embed = embedding_cost(model_, comm_, s, 0, ctx_.stage_size, ctx_.micro_batch, false, false);
    e.head = embedding_cost(model_, comm_, s, (last % task_.pp) * ctx_.stage_size, ctx_.stage_size,
                            ctx_.micro_batch, true, head_keeps_tied_copy(s, task_.pp));
    embs_.push_back(e);
  }
  if (embs_.empty()) return false;
  for (int32_t c = 0; c < nchunks; ++c) {
    Chunk ch;
    ch.rank = c % task_.pp;
    ch.stage_first = ch.rank * ctx_.stage_size;
    ch.inflight = inflight_microbatches(task_.schedule, task_.pp, task_.v, task_.m, c);
    ch.tr = std::make_unique<Transitions>(comm_, ch.stage_first, ctx_.stage_size, ctx_.micro_batch);
    ch.boundary_cls = ch.tr->class_of(ctx_.boundary);
    ch.free_cls = ch.tr->free_class();
    for (const auto& e : embs_) ch.emb_cls.push_back(ch.tr->class_of(embedding_layout(emb_strategies_[e.strategy], ctx_.stage_size)));
    ch.options.resize(model_.layer_types.size());
    ch.pruned.resize(model_.layer_types.size());
    ch.all.resize(model_.layer_types.size());
    for (size_t t = 0; t < model_.layer_types.size(); ++t) {
      const auto& lt = model_.layer_types[t];
      Front per_option;  // reuse the Pareto pruning for options of one class
      std::vector<Option> opts;
      for (size_t k = 0; k < strategies_.size(); ++k) {
        const Strategy& s = strategies_[k];
        if (!valid_for(s, &lt)) continue;
        const LayerCost cost = layer_cost(model_, lt, comm_, s, ch.stage_first, ctx_.stage_size, ctx_.micro_batch);
        Option o;
        o.strategy = static_cast<int32_t>(k);
        o.cls = ch.tr->class_of(layout_of(s, ctx_.stage_size));
        o.time = cost.microbatch_ms() + ctx_.kappa * cost.step_ms();
        o.mem = cost.param_bytes + cost.grad_bytes + cost.optimizer_bytes + cost.act_bytes * ch.inflight;
        o.spike = cost.spike_bytes;
        opts.push_back(o);
      }
      if (opts.empty() && std::find(model_.layer_type_of.begin(), model_.layer_type_of.end(),
                                    static_cast<int32_t>(t)) != model_.layer_type_of.end()) {
        return false;
      }
      // Drop options dominated by another option of the same class.
      std::stable_sort(opts.begin(), opts.end(), [](const Option& a, const Option& b) { return a.cls < b.cls; });
      ch.all[t] = opts;
      std::vector<Option> kept;
      for (size_t i = 0; i < opts.size();) {
        size_t j = i;
        Front f;
        while (j < opts.size() && opts[j].cls == opts[i].cls) {
          Entry e;
          e.mem = opts[j].mem;
          e.spike = opts[j].spike;
          e.time = opts[j].time;
          e.option = static_cast<int32_t>(j);
          f.push_back(e);
          ++j;
        }
        prune(f);
        std::sort(f.begin(), f.end(), [](const Entry& a, const Entry& b) { return a.option < b.option; });
        for (const Entry& e : f) kept.push_back(opts[e.option]);
        i = j;
      }
      ch.pruned[t] = kept;
      ch.options[t] = kept;
    }
    chunks_.push_back(std::move(ch));
  }
  return true;
}

const Sweep& Solver::sweep(int32_t c, int32_t start, int32_t start_cls, int32_t len) {
  Chunk& ch = chunks_[c];
  const int32_t key_start = homogeneous_ ? 0 : start;
  auto key = std::make_pair(key_start, start_cls);
  auto it = ch.sweeps.find(key);
  if (it != ch.sweeps.end() && static_cast<int32_t>(it->second.fronts.size()) >= len) return it->second;
  SweepInput in;
  in.model = &model_;
  in.start = key_start;
  // Longest chunk this start can have: leave one layer for every later chunk.
  const int32_t later = task_.pp * task_.v - 1 - c;
  in.max_len = std::max(len, layers_ - start - later);
  in.start_class = start_cls;
  in.cap_bytes = base_budget();
  // Every chunk's time X_r satisfies m * X_r <= objective, so X_r <= bound / m.
  in.time_bound = step_bound() / task_.m;
  in.fixed_len = task_.pp == 1 && task_.v == 1;
  if (in.fixed_len) in.max_len = len;
  in.options = &ch.options;
  in.entries_used = opt_.frontier_entries_used;
  in.max_entries = opt_.max_frontier_entries;
  ++result_.sweeps;
  Sweep sw = run_sweep(in, *ch.tr, &result_.entries);
  return ch.sweeps.insert_or_assign(key, std::move(sw)).first->second;
}

const Front& Solver::reading(int32_t c, int32_t start, int32_t start_cls, int32_t len, int32_t end_cls,
                             int64_t floor, bool collapse) {
  Chunk& ch = chunks_[c];
  const auto key = std::make_tuple(homogeneous_ ? 0 : start, start_cls, len, end_cls * 2 + (collapse ? 1 : 0), floor);
  auto it = ch.reads.find(key);
  if (it != ch.reads.end()) return it->second;
  const Sweep& sw = sweep(c, start, start_cls, len);
  const int64_t out_carry = layer_out_carry(model_, static_cast<size_t>(start + len - 1));
  Front f = read_out(sw, len - 1, end_cls, out_carry, *ch.tr, floor, collapse);
  return ch.reads.emplace(key, std::move(f)).first->second;
}

PlanSpec Solver::base_plan(int32_t emb_strategy) const {
  PlanSpec p;
  p.world_size = opt_.world_size;
  p.pp = task_.pp;
  p.schedule = task_.schedule;
  p.virtual_stages = task_.v;
  p.num_microbatches = task_.m;
  p.global_batch_size = task_.global_batch;
  p.layers.assign(layers_, Strategy{});
  p.embedding = emb_strategies_[emb_strategy];
  return p;
}

void Solver::reconstruct(int32_t c, int32_t start, int32_t start_cls, int32_t len, const Entry& read, PlanSpec& plan) {
  const Sweep& sw = sweep(c, start, start_cls, len);
  int32_t cls = read.prev_class, idx = read.prev_idx;
  for (int32_t pos = len - 1; pos >= 0; --pos) {
    const Entry& e = sw.fronts[pos][cls][idx];
    plan.layers[start + pos] = strategies_[e.option];
    cls = e.prev_class;
    idx = e.prev_idx;
  }
}

TaskResult Solver::run(bool min_memory, std::atomic<double>* shared_best) {
  min_memory_ = min_memory;
  shared_best_ = shared_best;
  if (min_memory && task_.v > 1) return result_;
  if (!setup()) return result_;
  if (!min_memory_ && !(uniform_lower_bound(-1) <= step_bound())) return result_;  // cannot win
  const int32_t nuniform = opt_.uniform_only ? static_cast<int32_t>(strategies_.size()) : 1;
  for (int32_t u = 0; u < nuniform; ++u) {
    if (opt_.uniform_only) {
      if (!(uniform_lower_bound(u) <= step_bound())) continue;
      activate(u);
      bool usable = true;  // every layer type must accept the strategy
      for (int32_t t : model_.layer_type_of) usable = usable && !chunks_[0].options[t].empty();
      if (!usable) continue;
    }
    for (size_t ei = 0; ei < embs_.size(); ++ei) own_bound_ = std::min(own_bound_, uniform_bound(embs_[ei], ei));
    if (task_.v > 1) {
      for (size_t ei = 0; ei < embs_.size(); ++ei) solve_interleaved(embs_[ei], ei);
      continue;
    }
    if (min_memory_) {
      for (size_t ei = 0; ei < embs_.size(); ++ei) solve_v1(embs_[ei], ei);
      continue;
    }
    // Most promising embedding choices first; skip those whose lower bound cannot win.
    std::vector<std::pair<double, size_t>> order;
    for (size_t ei = 0; ei < embs_.size(); ++ei) order.push_back({lower_bound_v1(embs_[ei], ei), ei});
    std::sort(order.begin(), order.end());
    for (const auto& [lb, ei] : order) {
      if (!(lb <= step_bound())) break;
      solve_v1(embs_[ei], ei);
    }
  }
  if (result_.found) {
    result_.samples_per_s = task_.global_batch / (result_.step_ms / 1000.0);
    if (shared_best_ != nullptr) {
      double cur = shared_best_->load();
      while (result_.samples_per_s > cur && !shared_best_->compare_exchange_weak(cur, result_.samples_per_s)) {
      }
    }
  }
  return result_;
}

}  // namespace detail

double task_uniform_throughput(const ModelTables& model, const HardwareTables& hw, const SearchOptions& opt,
                               const Task& task) {
  detail::Solver s(model, hw, opt, task);
  return s.uniform_throughput();
}

TaskResult solve_task(const ModelTables& model, const HardwareTables& hw, const SearchOptions& opt,
                      const Task& task, bool min_memory, std::atomic<double>* best_samples_per_s) {
  detail::Solver s(model, hw, opt, task);
  return s.run(min_memory, best_samples_per_s);
}

}  // namespace galvatron
