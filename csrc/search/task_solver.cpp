#include "search/task_solver.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <tuple>

#include "search/search.h"
#include "search/split.h"
#include "search/stage_terms.h"
#include "search/sweep.h"

namespace galvatron {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kNoCap = std::numeric_limits<int64_t>::max() / 4;

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

bool Solver::fits_batch(const Strategy& s) const {
  return ctx_.micro_batch % (ctx_.stage_size / (s.tp * s.sp)) == 0;
}

bool Solver::valid_for(const Strategy& s, const LayerTypeProfile* lt) const {
  if (!fits_batch(s)) return false;
  const int64_t shards = int64_t{s.sp} * (s.sp_kind == SpKind::kMegatron ? s.tp : 1);
  const int64_t seq = lt != nullptr ? lt->seq_len : model_.embedding.seq_len;
  if (seq % shards != 0) return false;
  const int deg = log2_exact(int64_t{s.tp} * s.sp);
  if (lt == nullptr) {
    const auto& e = model_.embedding;
    const size_t need = static_cast<size_t>(deg) + 1;
    return e.embed_fwd_ms_per_sample.size() >= need && e.head_fwd_ms_per_sample.size() >= need &&
           e.embed_bwd_ms_per_sample.size() >= need && e.head_bwd_ms_per_sample.size() >= need &&
           e.embed_act_bytes_per_sample.size() >= need && e.head_act_bytes_per_sample.size() >= need;
  }
  if (lt->num_heads % (s.tp * s.sp) != 0 || lt->num_kv_heads % (s.tp * s.sp) != 0) return false;
  const size_t need = static_cast<size_t>(deg) + 1;
  return lt->fwd_ms_per_sample.size() >= need && lt->bwd_ms_per_sample.size() >= need &&
         lt->act_bytes_per_sample[static_cast<int>(s.sp_kind)].size() >= need;
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
  for (const Option& probe : chunks_[0].options[model_.layer_type_of[0]]) {
    std::vector<double> x(task_.pp, 0.0);
    bool ok = true;
    for (int32_t r = 0; r < task_.pp && ok; ++r) {
      Chunk& ch = chunks_[r];
      int64_t mem = 0, spike = 0;
      double t = 0;
      int32_t prev = r == 0 ? ch.emb_cls[ei] : ch.boundary_cls;
      std::vector<const Option*> pick(model_.layer_types.size(), nullptr);
      for (size_t t = 0; t < pick.size(); ++t) {
        for (const Option& o : ch.options[t]) {
          if (o.strategy == probe.strategy) pick[t] = &o;
        }
      }
      for (int32_t l = bounds[r]; l < bounds[r + 1] && ok; ++l) {
        const Option* it = pick[model_.layer_type_of[l]];
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

}  // namespace

double task_uniform_throughput(const ModelTables& model, const HardwareTables& hw, const SearchOptions& opt,
                               const Task& task) {
  Solver s(model, hw, opt, task);
  return s.uniform_throughput();
}

TaskResult solve_task(const ModelTables& model, const HardwareTables& hw, const SearchOptions& opt,
                      const Task& task, bool min_memory, std::atomic<double>* best_samples_per_s) {
  Solver s(model, hw, opt, task);
  return s.run(min_memory, best_samples_per_s);
}

}  // namespace galvatron
