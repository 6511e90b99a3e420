// One pipeline chunk's layer-wise dynamic programme: for a chunk that starts at layer `start`,
// Pareto frontiers of (memory, spike, time) after every further layer, one frontier per layout
// class of the last layer, with back pointers to recover the strategies.
#pragma once
#include <atomic>
#include <cstdint>
#include <map>
#include <vector>

#include "search/cost_model.h"
#include "search/frontier.h"

namespace galvatron {

struct Option {  // one strategy for one layer type on one chunk
  int32_t strategy = 0;  // index into the task's strategy list
  int32_t cls = 0;       // layout class
  double time = 0;       // per micro-batch work + kappa * per-step tail
  int64_t mem = 0;       // states + in-flight activations
  int64_t spike = 0;
};

// Layout classes and the redistribution times between them, cached per carry size.
class Transitions {
 public:
  Transitions(const CommModel& comm, int32_t stage_first, int32_t stage_size, int32_t micro_batch)
      : comm_(comm), first_(stage_first), size_(stage_size), mb_(micro_batch) {}
  int32_t class_of(const Layout& l);  // adds the layout when new
  // A class that moves to and from every class for free (for lower bounds).
  int32_t free_class();
  double ms(int32_t from, int32_t to, int64_t carry_bytes);
  int32_t num_classes() const { return static_cast<int32_t>(layouts_.size()); }

 private:
  const CommModel& comm_;
  int32_t first_, size_, mb_;
  std::vector<Layout> layouts_;
  int32_t free_ = -1;
  // Dense caches per carry size: [from * classes + to], NaN until computed.
  int32_t dim_ = 0;
  std::vector<int64_t> carries_;
  std::vector<std::vector<double>> cache_;
};

struct Sweep {
  std::vector<std::vector<Front>> fronts;  // [pos][class], after layer start + pos
};

struct SweepInput {
  const ModelTables* model = nullptr;
  int32_t start = 0, max_len = 0;
  int32_t start_class = 0;
  int64_t cap_bytes = 0;                            // entries above this (mem + spike) are dropped
  double time_bound = 0;                            // entries slower than this are dropped
  bool fixed_len = false;  // only the full max_len matters: prune with the rest's lower bounds
  const std::vector<std::vector<Option>>* options;  // per layer type
  std::atomic<int64_t>* entries_used = nullptr;     // shared across tasks (may be null)
  int64_t max_entries = 0;                          // 0: unlimited
};

Sweep run_sweep(const SweepInput& in, Transitions& tr, int64_t* entries_counter);

// Frontier after the chunk's end transition to `end_class`; entries keep the class and index
// of their frontier entry at `pos` in prev_class / prev_idx. With `collapse`, memory becomes the
// effective peak mem + max(spike, spike_floor) and the result is a staircase sorted by memory
// ascending with time strictly decreasing; without, it stays a 3-D frontier sorted by time.
Front read_out(const Sweep& sw, int32_t pos, int32_t end_class, int64_t out_carry, Transitions& tr,
               int64_t spike_floor, bool collapse);

}  // namespace galvatron
