// Bounds, split tables and plans of one task (see solver.h).
#include <algorithm>
#include <cmath>
#include <limits>

#include "search/solver.h"

namespace galvatron {
namespace detail {

double Solver::step_bound() const {
  if (min_memory_) return kInf;
  double b = own_bound_;
  if (shared_best_ != nullptr) {
    const double best = shared_best_->load();
    if (best > 0) b = std::min(b, task_.global_batch / best * 1000.0);
  }
  return b < kInf ? b * (1.0 + 1e-9) + 1e-9 : kInf;
}

// A quick feasible plan: every layer the same option (by strategy), even split.
double Solver::uniform_bound(const EmbChoice& e, size_t ei) {
  if (task_.v > 1 || min_memory_) return kInf;
  const std::vector<int32_t> bounds = even_bounds(layers_, task_.pp);
  const double tied = tied_sync_ms(ctx_, emb_strategies_[e.strategy]);
  double best = kInf;
  // Option of each strategy per rank and layer type, looked up by every probe below (built once:
  // searching the option lists per probe made this bound quadratic in the strategies).
  const size_t types = model_.layer_types.size();
  std::vector<const Option*> by_strategy(static_cast<size_t>(task_.pp) * types * strategies_.size(), nullptr);
  for (int32_t r = 0; r < task_.pp; ++r) {
    for (size_t t = 0; t < types; ++t) {
      for (const Option& o : chunks_[r].options[t]) {
        by_strategy[(r * types + t) * strategies_.size() + o.strategy] = &o;
      }
    }
  }
  for (const Option& probe : chunks_[0].options[model_.layer_type_of[0]]) {
    std::vector<double> x(task_.pp, 0.0);
    bool ok = true;
    for (int32_t r = 0; r < task_.pp && ok; ++r) {
      Chunk& ch = chunks_[r];
      int64_t mem = 0, spike = 0;
      double t = 0;
      int32_t prev = r == 0 ? ch.emb_cls[ei] : ch.boundary_cls;
      const Option* const* pick = &by_strategy[static_cast<size_t>(r) * types * strategies_.size()];
      for (int32_t l = bounds[r]; l < bounds[r + 1] && ok; ++l) {
        const Option* it = pick[model_.layer_type_of[l] * strategies_.size() + probe.strategy];
        if (it == nullptr) {
          ok = false;
          break;
        }
        t += it->time + ch.tr->ms(prev, it->cls, model_.layer_types[model_.layer_type_of[l]].carry_bytes_per_sample);
        mem += it->mem;
        spike = std::max(spike, it->spike);
        prev = it->cls;
      }
      if (!ok) break;
      const bool last = r == task_.pp - 1;
      t += ch.tr->ms(prev, last ? ch.emb_cls[ei] : ch.boundary_cls, layer_out_carry(model_, bounds[r + 1] - 1));
      t += chunk_edge_ms(ctx_, r, model_.layer_types[model_.layer_type_of[bounds[r]]].carry_bytes_per_sample,
                         layer_out_carry(model_, bounds[r + 1] - 1));
      EndTerms ends;
      if (r == 0) ends.add(e.embed, ch.inflight, ctx_.kappa, tied);
      if (last) ends.add(e.head, ch.inflight, ctx_.kappa, task_.pp > 1 ? tied : 0.0);
      mem += ends.mem;
      spike = std::max(spike, ends.spike);
      t += ends.ms;
      ok = mem + spike <= base_budget();
      x[r] = t;
    }
    if (ok) best = std::min(best, pipeline_step_ms(x, 1, task_.m));
  }
  return best;
}

// Cells of the split tables for one embedding choice: per rank, per (start, end), the best
// chunk time (or, in min-memory mode, the smallest memory) and the reading entry behind it.
void Solver::fill_cells(const EmbChoice& e, size_t ei, SplitTables& t, bool ends_only, bool free_ends) {
  const int32_t pp = task_.pp;
  const double tied = tied_sync_ms(ctx_, emb_strategies_[e.strategy]);
  for (int32_t r = 0; r < pp; ++r) {
    Chunk& ch = chunks_[r];
    const bool first = r == 0, last = r == pp - 1;
    if (ends_only && !first && !last) continue;
    EndTerms ends;
    if (first) ends.add(e.embed, ch.inflight, ctx_.kappa, tied);
    if (last) ends.add(e.head, ch.inflight, ctx_.kappa, pp > 1 ? tied : 0.0);
    const int64_t const_mem = ends.mem, floor = ends.spike;
    const double const_ms = ends.ms;
    const int32_t emb_cls = free_ends ? ch.free_cls : ch.emb_cls[ei];
    const int32_t start_cls = first ? emb_cls : ch.boundary_cls;
    const int32_t end_cls = last ? emb_cls : ch.boundary_cls;
    const int64_t budget = base_budget() - const_mem;
    for (int32_t a = first ? 0 : r; a < (first ? 1 : layers_ - (pp - 1 - r)); ++a) {
      for (int32_t b = a + 1; b <= (last ? layers_ : layers_ - (pp - 1 - r)); ++b) {
        if (last && b != layers_) continue;
        if (!t.allowed(r, a, b)) continue;
        const Front& f = reading(r, a, start_cls, b - a, end_cls, floor, true);
        Cell& cell = t.at(r, a, b);
        cell = Cell{};
        if (f.empty()) continue;
        if (min_memory_) {
          cell.mem = f.front().mem + const_mem;
          cell.entry = f.front();
          cell.x = 0;
          continue;
        }
        // f: mem ascending, time decreasing -> last entry within budget has the least time.
        auto it = std::upper_bound(f.begin(), f.end(), budget, [](int64_t v, const Entry& x) { return v < x.mem; });
        if (it == f.begin()) continue;
        const Entry& best = *std::prev(it);
        const int64_t carry_first = model_.layer_types[model_.layer_type_of[a]].carry_bytes_per_sample;
        cell.x = best.time + const_ms + chunk_edge_ms(ctx_, r, carry_first, layer_out_carry(model_, b - 1));
        cell.mem = best.mem + const_mem;
        cell.entry = best;
      }
    }
  }
}

// Transitions free, work spread perfectly: sum_r X_r >= W and max_r X_r >= W / pp, where W is
// the layers' time plus the cheapest embedding and head.
double Solver::uniform_lower_bound(int32_t u) const {
  double work = 0;
  for (int32_t l = 0; l < layers_; ++l) {
    double t = kInf;
    for (const Chunk& ch : chunks_) {
      for (const Option& o : ch.all[model_.layer_type_of[l]]) {
        if (u < 0 || o.strategy == u) t = std::min(t, o.time);
      }
    }
    work += t;
  }
  double ends = kInf;
  for (const EmbChoice& e : embs_) {
    ends = std::min(ends, e.embed.microbatch_ms() + e.head.microbatch_ms() +
                              ctx_.kappa * (e.embed.step_ms() + e.head.step_ms()));
  }
  work += ends;
  const double v = task_.v;
  return work / v + (task_.m - 1.0 / v) * work / task_.pp;
}

// Objective with the embedding/head layout transitions made free: no plan with embedding
// choice `e` can do better. Shares one first-rank sweep across all embedding choices.
double Solver::lower_bound_v1(const EmbChoice& e, size_t ei) {
  const bool fresh = tables_ == nullptr;
  if (fresh) tables_ = std::make_unique<SplitTables>(task_.pp, layers_, !opt_.search_pp_split);
  fill_cells(e, ei, *tables_, !fresh, true);
  const SplitChoice c = best_split(*tables_, task_.m, nullptr);
  return c.feasible ? c.value_ms : kInf;
}

void Solver::solve_v1(const EmbChoice& e, size_t ei) {
  const bool fresh = tables_ == nullptr;
  if (fresh) tables_ = std::make_unique<SplitTables>(task_.pp, layers_, !opt_.search_pp_split);
  SplitTables& t = *tables_;
  fill_cells(e, ei, t, !fresh);
  SplitChoice choice = min_memory_ ? min_max_memory_split(t) : best_split(t, task_.m, &result_.evaluated);
  if (!choice.feasible) return;
  PlanSpec plan = base_plan(e.strategy);
  plan.stage_layers.clear();
  for (int32_t r = 0; r < task_.pp; ++r) {
    const int32_t a = choice.bounds[r], b = choice.bounds[r + 1];
    plan.stage_layers.push_back(b - a);
    const int32_t start_cls = r == 0 ? chunks_[r].emb_cls[ei] : chunks_[r].boundary_cls;
    reconstruct(r, a, start_cls, b - a, t.at(r, a, b).entry, plan);
  }
  if (min_memory_) {
    const int64_t total = choice.value_mem + hw_.framework_overhead_bytes + hw_.comm_buffer_bytes;
    if (result_.min_mem_bytes < 0 || total < result_.min_mem_bytes) {
      result_.min_mem_bytes = total;
      result_.plan = plan;
    }
    return;
  }
  const double step = choice.value_ms;
  if (!result_.found || step < result_.step_ms) {
    result_.found = true;
    result_.step_ms = step;
    result_.plan = plan;
    own_bound_ = std::min(own_bound_, step);
  }
}

// Interleaved 1F1B: chunks of an even split; each rank combines its v chunk frontiers.
void Solver::solve_interleaved(const EmbChoice& e, size_t ei) {
  const int32_t pp = task_.pp, nchunks = pp * task_.v;
  const std::vector<int32_t> bounds = even_bounds(layers_, nchunks);
  const double tied = tied_sync_ms(ctx_, emb_strategies_[e.strategy]);
  std::vector<double> x(pp, 0.0);
  std::vector<std::vector<Front>> acc(pp);     // per rank: accumulated fronts, chunk by chunk
  std::vector<std::vector<int32_t>> of(pp);    // chunk ids of each rank
  std::vector<Entry> chosen(pp);
  for (int32_t r = 0; r < pp; ++r) {
    EndTerms ends;
    double edges_ms = 0;
    Front cur{Entry{}};
    for (int32_t c = r; c < nchunks; c += pp) {
      Chunk& ch = chunks_[c];
      if (c == 0) ends.add(e.embed, ch.inflight, ctx_.kappa, tied);
      if (c == nchunks - 1) ends.add(e.head, ch.inflight, ctx_.kappa, tied);
      const int32_t a = bounds[c], b = bounds[c + 1];
      const int32_t start_cls = c == 0 ? ch.emb_cls[ei] : ch.boundary_cls;
      const int32_t end_cls = c == nchunks - 1 ? ch.emb_cls[ei] : ch.boundary_cls;
      const Front& f = reading(c, a, start_cls, b - a, end_cls, 0, false);
      const int64_t carry_first = model_.layer_types[model_.layer_type_of[a]].carry_bytes_per_sample;
      edges_ms += chunk_edge_ms(ctx_, c, carry_first, layer_out_carry(model_, b - 1));
      Front next;
      for (int32_t i = 0; i < static_cast<int32_t>(cur.size()); ++i) {
        for (int32_t j = 0; j < static_cast<int32_t>(f.size()); ++j) {
          Entry n;
          n.mem = cur[i].mem + f[j].mem;
          n.spike = std::max(cur[i].spike, f[j].spike);
          if (n.mem + n.spike > base_budget()) continue;
          n.time = cur[i].time + f[j].time;
          n.prev_idx = i;
          n.option = j;
          next.push_back(n);
        }
      }
      prune(next);
      acc[r].push_back(next);
      of[r].push_back(c);
      cur = next;
    }
    const int64_t budget = base_budget() - ends.mem;
    double best = kInf;
    for (const Entry& en : cur) {  // sorted by time: the first that fits is the best
      if (en.mem + std::max(en.spike, ends.spike) <= budget) {
        best = en.time;
        chosen[r] = en;
        break;
      }
    }
    if (!(best < kInf)) return;
    x[r] = best + ends.ms + edges_ms;
  }
  ++result_.evaluated;
  const double step = pipeline_step_ms(x, task_.v, task_.m);
  if (result_.found && !(step < result_.step_ms)) return;
  PlanSpec plan = base_plan(e.strategy);
  plan.stage_layers.clear();
  for (int32_t c = 0; c < nchunks; ++c) plan.stage_layers.push_back(bounds[c + 1] - bounds[c]);
  for (int32_t r = 0; r < pp; ++r) {
    Entry en = chosen[r];
    for (int32_t k = static_cast<int32_t>(of[r].size()) - 1; k >= 0; --k) {
      const int32_t c = of[r][k], a = bounds[c], b = bounds[c + 1];
      const int32_t start_cls = c == 0 ? chunks_[c].emb_cls[ei] : chunks_[c].boundary_cls;
      const int32_t end_cls = c == nchunks - 1 ? chunks_[c].emb_cls[ei] : chunks_[c].boundary_cls;
      const Front& f = reading(c, a, start_cls, b - a, end_cls, 0, false);
      reconstruct(c, a, start_cls, b - a, f[en.option], plan);
      if (k > 0) en = acc[r][k - 1][en.prev_idx];
    }
  }
  result_.found = true;
  result_.step_ms = step;
  result_.plan = plan;
  own_bound_ = std::min(own_bound_, step);
}

}  // namespace detail
}  // namespace galvatron
