// Exact solver of one search task: fixed pp, schedule, virtual stages, global batch and
// micro-batch count; free layer split, per-layer strategies and embedding/head strategy.
#pragma once
#include <atomic>
#include <cstdint>
#include <limits>

#include "search/problem.h"

namespace galvatron {

struct Task {
  int32_t pp = 1, v = 1, global_batch = 1, m = 1;
  Schedule schedule = Schedule::k1F1B;
};

struct TaskResult {
  bool found = false;
  double step_ms = std::numeric_limits<double>::infinity();
  double samples_per_s = 0;
  PlanSpec plan;               // best plan, or the smallest-memory plan in min-memory mode
  int64_t min_mem_bytes = -1;  // min-memory mode: smallest per-device peak over the task
  int64_t sweeps = 0, entries = 0, evaluated = 0, strategies = 0;
};

// Best plan of the task under the memory budget; with `min_memory`, the plan of the task with
// the smallest per-device peak memory instead (used to explain infeasible budgets).
// Throughput of the best plan of the task whose layers all share one strategy and whose
// layers are split evenly (0 when none fits): a cheap lower bound of the task's optimum.
double task_uniform_throughput(const ModelTables& model, const HardwareTables& hw, const SearchOptions& opt,
                               const Task& task);

// `best_samples_per_s` (may be null) is the best throughput found by any task so far; it only
// prunes work (entries strictly slower than it), never changes the answer.
TaskResult solve_task(const ModelTables& model, const HardwareTables& hw, const SearchOptions& opt,
                      const Task& task, bool min_memory, std::atomic<double>* best_samples_per_s = nullptr);

}  // namespace galvatron
