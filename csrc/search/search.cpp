// Outer loops of the search: tasks (pp, schedule, virtual stages, batch, micro-batches), run in
// parallel; the per-task solver lives in task_solver.cpp.
#include "search/search.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

#include "search/task_solver.h"

namespace galvatron {

namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

std::vector<Task> make_tasks(const ModelTables& model, const SearchOptions& opt) {
  const int32_t layers = static_cast<int32_t>(model.layer_type_of.size());
  std::vector<int32_t> pps = opt.pp_degrees;
  if (pps.empty()) {
    for (int32_t p : divisors(opt.world_size)) {
      if (p <= opt.max_pp) pps.push_back(p);
    }
  }
  std::vector<Task> tasks;
  // Without a pipeline the schedule does not matter: one task, labelled with the first
  // non-interleaved schedule asked for.
  Schedule single = Schedule::k1F1B;
  for (Schedule sch : opt.schedules) {
    if (sch != Schedule::kInterleaved1F1B) {
      single = sch;
      break;
    }
  }
  // Two passes: count first (nothing stored), refuse a space over max_tasks, then build.
  for (int pass = 0; pass < 2; ++pass) {
    int64_t count = 0;
    for (int32_t pp : pps) {
      const std::vector<Schedule> schedules = pp == 1 ? std::vector<Schedule>{single} : opt.schedules;
      for (Schedule sch : schedules) {
        const std::vector<int32_t> vs = sch == Schedule::kInterleaved1F1B ? opt.virtual_stages : std::vector<int32_t>{1};
        for (int32_t v : vs) {
          if (int64_t{pp} * v > layers) continue;
          for (int32_t B : opt.global_batch_sizes) {
            const std::vector<int32_t> ms = opt.num_microbatches.empty() ? divisors(B) : opt.num_microbatches;
            for (int32_t m : ms) {
              if (B % m != 0) continue;
              if (sch == Schedule::kInterleaved1F1B && m % pp != 0) continue;
              ++count;
              if (pass == 1) tasks.push_back(Task{pp, v, B, m, sch});
            }
          }
        }
      }
    }
    if (pass == 0 && opt.max_tasks > 0 && count > opt.max_tasks) {
      fail("max_tasks: the search space has " + std::to_string(count) + " tasks (pipeline degree x schedule x " +
           "global batch size x micro-batch count; " + std::to_string(opt.global_batch_sizes.size()) +
           " batch sizes), more than the limit of " + std::to_string(opt.max_tasks) +
           "; narrow it: fewer global batch sizes, fixed num_microbatches, a smaller max_pp, fewer schedules");
    }
    if (pass == 0) tasks.reserve(static_cast<size_t>(count));
  }
  return tasks;
}

}  // namespace

std::vector<Strategy> enumerate_strategies(const SearchOptions& opt, int32_t stage_size, bool embedding) {
  std::vector<Strategy> out;
  // Every divisor of the stage size is a candidate degree; the model's divisibility (heads,
  // sequence, profiled degrees) is checked per layer type by the solver.
  const std::vector<int32_t> degrees = divisors(stage_size);
  for (int32_t tp : degrees) {
    if (tp > opt.max_tp) break;
    std::vector<std::pair<SpKind, int32_t>> kinds;
    if (tp == 1 || !opt.megatron_sp_only) kinds.push_back({SpKind::kNone, 1});
    if (tp > 1 && (opt.allow_megatron_sp || opt.megatron_sp_only)) kinds.push_back({SpKind::kMegatron, 1});
    if (tp == 1 && opt.allow_ulysses) {
      for (int32_t sp : degrees) {
        if (sp > 1 && sp <= opt.max_sp) kinds.push_back({SpKind::kUlysses, sp});
      }
    }
    for (auto [kind, sp] : kinds) {
      if (stage_size % (tp * sp) != 0) continue;
      const int32_t dp = stage_size / (tp * sp);
      std::vector<DpType> dps = opt.dp_types;
      if (dp * sp == 1) dps = {DpType::kDdp};  // one replica: every dp_type is the same plan
      const bool strided_differs = opt.allow_strided && tp * sp > 1 && dp > 1;
      for (int consec = 1; consec >= (strided_differs ? 0 : 1); --consec) {
        for (DpType d : dps) {
          for (Checkpoint ck : {Checkpoint::kNone, Checkpoint::kSelective, Checkpoint::kFull}) {
            if (ck != Checkpoint::kNone && embedding) continue;
            if (ck == Checkpoint::kSelective && !opt.allow_selective_checkpoint) continue;
            if (ck == Checkpoint::kFull && !opt.allow_checkpoint) continue;
            Strategy s;
            s.tp = tp;
            s.sp = sp;
            s.sp_kind = kind;
            s.dp_type = d;
            s.checkpoint = ck;
            s.tp_consecutive = consec == 1;
            out.push_back(s);
          }
        }
      }
    }
  }
  return out;
}

void validate_options(const ModelTables& model, const HardwareTables& hw, const SearchOptions& opt) {
  validate_model(model);
  validate_hardware(hw);
  if (opt.world_size < 1) fail("world_size must be >= 1");
  if (int64_t{hw.num_nodes} * hw.gpus_per_node != opt.world_size) {
    fail("world_size=" + std::to_string(opt.world_size) + " does not match the hardware profile (" +
         std::to_string(hw.num_nodes) + " nodes x " + std::to_string(hw.gpus_per_node) + " devices)");
  }
  if (opt.memory_budget_bytes <= 0) fail("memory_gb: the per-device memory budget must be > 0");
  if (opt.global_batch_sizes.empty()) fail("global_batch_size: at least one value is needed");
  for (int32_t b : opt.global_batch_sizes) {
    if (b < 1) fail("global_batch_size values must be >= 1");
  }
  for (int32_t m : opt.num_microbatches) {
    if (m < 1) fail("num_microbatches values must be >= 1");
  }
  for (int32_t p : opt.pp_degrees) {
    if (p < 1 || opt.world_size % p != 0) fail("pp_degrees: " + std::to_string(p) + " does not divide world_size");
  }
  for (int32_t v : opt.virtual_stages) {
    if (v < 2) fail("virtual_stages values must be >= 2");
  }
  if (opt.max_tp < 1 || opt.max_sp < 1 || opt.max_pp < 1) fail("max_tp, max_sp and max_pp must be >= 1");
  if (opt.dp_types.empty()) fail("dp_types: at least one is needed");
  if (opt.schedules.empty()) fail("schedules: at least one is needed");
  if (opt.num_threads < 0) fail("num_threads must be >= 0 (0: all cores)");
  if (opt.max_tasks < 0 || opt.max_frontier_entries < 0) fail("max_tasks and max_frontier_entries must be >= 0 (0: unlimited)");
  validate_magnitudes(model, *std::max_element(opt.global_batch_sizes.begin(), opt.global_batch_sizes.end()));
}

namespace {

bool better(const TaskResult& a, const TaskResult& b) {  // higher throughput; ties keep b
  return a.found && (!b.found || a.samples_per_s > b.samples_per_s);
}

// Runs fn(i) for every i in `order` on opt.num_threads threads; rethrows the first error.
template <typename Fn>
void parallel_for(const SearchOptions& opt, const std::vector<size_t>& order, Fn fn) {
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  auto worker = [&]() {
    try {
      for (size_t k = next++; k < order.size() && !failed; k = next++) fn(order[k]);
    } catch (...) {
      if (!failed.exchange(true)) error = std::current_exception();
    }
  };
  int32_t threads = opt.num_threads == 0 ? static_cast<int32_t>(std::thread::hardware_concurrency()) : opt.num_threads;
  threads = std::max<int32_t>(1, std::min<int32_t>(threads, static_cast<int32_t>(order.size())));
  if (threads == 1) {
    worker();
  } else {
    // The calling thread works too. A thread that cannot be started (e.g. EAGAIN under a
    // memory limit such as --serve's worker) only means fewer helpers: the tasks are taken from
    // one shared counter, so whoever runs does all of them.
    std::vector<std::thread> pool;
    for (int32_t t = 1; t < threads; ++t) {
      try {
        pool.emplace_back(worker);
      } catch (const std::system_error&) {
        break;
      }
    }
    worker();
    for (auto& th : pool) th.join();
  }
  if (error) std::rethrow_exception(error);
}

// Solves every task. A cheap pre-pass (best uniform, evenly split plan of each task) seeds the
// bound shared by all tasks and orders them most promising first; both only prune work, and the
// winner is chosen in task order afterwards, so the answer does not depend on them.
std::vector<TaskResult> run_tasks(const ModelTables& model, const HardwareTables& hw, const SearchOptions& opt,
                                  const std::vector<Task>& tasks, bool min_memory) {
  std::vector<size_t> order(tasks.size());
  for (size_t i = 0; i < tasks.size(); ++i) order[i] = i;
  std::atomic<double> best{0.0};
  if (!min_memory) {
    std::vector<double> quick(tasks.size(), 0.0);
    parallel_for(opt, order, [&](size_t i) { quick[i] = task_uniform_throughput(model, hw, opt, tasks[i]); });
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return quick[a] > quick[b]; });
    best = *std::max_element(quick.begin(), quick.end());
  }
  std::vector<TaskResult> results(tasks.size());
  parallel_for(opt, order, [&](size_t i) { results[i] = solve_task(model, hw, opt, tasks[i], min_memory, &best); });
  return results;
}

}  // namespace

SearchOutput search(const ModelTables& model, const HardwareTables& hw, const SearchOptions& options) {
  validate_options(model, hw, options);
  std::atomic<int64_t> entries_used{0};
  SearchOptions opt = options;
  opt.frontier_entries_used = &entries_used;
  const std::vector<Task> tasks = make_tasks(model, opt);
  SearchOutput out;
  out.stats.tasks = static_cast<int64_t>(tasks.size());
  if (tasks.empty()) return out;
  std::vector<TaskResult> results = run_tasks(model, hw, opt, tasks, false);
  TaskResult best;
  for (const auto& r : results) {
    out.stats.dp_sweeps += r.sweeps;
    out.stats.frontier_entries += r.entries;
    out.stats.plans_evaluated += r.evaluated;
    out.stats.strategies = std::max(out.stats.strategies, r.strategies);
    if (better(r, best)) best = r;
  }
  if (best.found) {
    out.found = true;
    out.plan = best.plan;
    out.samples_per_s = best.samples_per_s;
    out.prediction = evaluate_plan(model, hw, best.plan);
    const double rel = std::abs(out.prediction.step_time_ms - best.step_ms) / std::max(1e-12, best.step_ms);
    if (rel > 1e-6) {
      throw std::logic_error("internal error: the searched plan's evaluated step time " +
                             std::to_string(out.prediction.step_time_ms) + " ms differs from the search objective " +
                             std::to_string(best.step_ms) + " ms");
    }
    return out;
  }
  // Nothing fits: find the plan with the smallest per-device peak (GPipe/1F1B tasks).
  std::vector<TaskResult> mins = run_tasks(model, hw, opt, tasks, true);
  for (const auto& r : mins) {
    if (r.min_mem_bytes >= 0 && (out.min_feasible_bytes < 0 || r.min_mem_bytes < out.min_feasible_bytes)) {
      out.min_feasible_bytes = r.min_mem_bytes;
      out.min_memory_plan = r.plan;
    }
  }
  return out;
}

}  // namespace galvatron
