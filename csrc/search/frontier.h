// Pareto frontiers of partial plans: (memory, transient spike, time), all to be minimised.
// Memory is in exact integer bytes, so feasibility checks are exact (no discretisation).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace galvatron {

struct Entry {
  int64_t mem = 0;    // additive bytes (states + in-flight activations)
  int64_t spike = 0;  // max transient bytes of the layers so far
  double time = 0;    // additive milliseconds (per micro-batch work + amortised per-step tail)
  int32_t prev_class = -1, prev_idx = -1, option = -1;  // back pointer for reconstruction
};
using Front = std::vector<Entry>;

// One time-sorted input of merge_prune, shifted by (dt, dm) and with spikes raised to at least
// spike_floor. With link_class >= 0, outputs point back into it (prev_class = link_class,
// prev_idx = index in `data`); with set_option >= 0 their option is set to it.
struct Source {
  const Entry* data = nullptr;
  size_t size = 0;
  double dt = 0;
  int64_t dm = 0;
  int64_t spike_floor = 0;
  int32_t link_class = -1, set_option = -1;
};

// Pareto frontier of the union of shifted sources (each sorted by time, as prune() leaves
// them), dropping entries with mem + spike > cap or time > time_bound; a k-way merge, so
// linear in the input size. Output sorted by time. Ties keep the earlier source.
void merge_prune(const std::vector<Source>& sources, int64_t cap, double time_bound, Front& out);

// Removes dominated entries: another entry no slower with mem <= and mem + spike <= (then it is
// no worse whatever spike later layers add). Ties are broken
// by the earlier entry in the input order, so results are deterministic. Sorts by time.
void prune(Front& f);

}  // namespace galvatron
