// Pareto frontiers of partial plans: (memory, transient spike, time), all to be minimised.
// Memory is in exact integer bytes, so feasibility checks are exact (no discretisation).
#pragma once
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

// Removes dominated entries (another entry no worse in mem, spike and time). Ties are broken
// by the earlier entry in the input order, so results are deterministic. Sorts by time.
void prune(Front& f);

}  // namespace galvatron
