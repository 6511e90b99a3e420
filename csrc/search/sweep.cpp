#include "search/sweep.h"

#include <algorithm>

namespace galvatron {

int32_t Transitions::class_of(const Layout& l) {
  for (size_t i = 0; i < layouts_.size(); ++i) {
    if (layouts_[i] == l) return static_cast<int32_t>(i);
  }
  layouts_.push_back(l);
  return static_cast<int32_t>(layouts_.size() - 1);
}

double Transitions::ms(int32_t from, int32_t to, int64_t carry_bytes) {
  if (from == to) return 0.0;
  const auto key = std::make_tuple(from, to, carry_bytes);
  auto it = cache_.find(key);
  if (it != cache_.end()) return it->second;
  const double t = redistribution_ms(comm_, layouts_[from], layouts_[to], first_, size_, mb_, carry_bytes);
  cache_.emplace(key, t);
  return t;
}

Sweep run_sweep(const SweepInput& in, Transitions& tr, int64_t* entries_counter) {
  const ModelTables& model = *in.model;
  Sweep sw;
  std::vector<Front> prev(tr.num_classes());
  prev[in.start_class].push_back(Entry{});
  Front incoming, next;
  for (int32_t pos = 0; pos < in.max_len; ++pos) {
    const int32_t layer = in.start + pos;
    const int32_t type = model.layer_type_of[layer];
    const int64_t carry = model.layer_types[type].carry_bytes_per_sample;
    const auto& opts = (*in.options)[type];
    std::vector<Front> cur(tr.num_classes());
    // Options are grouped by class (sorted by class in the caller).
    for (size_t o0 = 0; o0 < opts.size();) {
      const int32_t cls = opts[o0].cls;
      size_t o1 = o0;
      while (o1 < opts.size() && opts[o1].cls == cls) ++o1;
      incoming.clear();
      for (int32_t pc = 0; pc < static_cast<int32_t>(prev.size()); ++pc) {
        if (prev[pc].empty()) continue;
        const double t = tr.ms(pc, cls, carry);
        for (int32_t i = 0; i < static_cast<int32_t>(prev[pc].size()); ++i) {
          Entry e = prev[pc][i];
          e.time += t;
          e.prev_class = pc;
          e.prev_idx = i;
          incoming.push_back(e);
        }
      }
      prune(incoming);
      next.clear();
      for (size_t o = o0; o < o1; ++o) {
        const Option& op = opts[o];
        for (const Entry& e : incoming) {
          Entry n = e;
          n.mem += op.mem;
          n.spike = std::max(n.spike, op.spike);
          if (n.mem + n.spike > in.cap_bytes) continue;
          n.time += op.time;
          n.option = op.strategy;
          next.push_back(n);
        }
      }
      prune(next);
      if (entries_counter != nullptr) *entries_counter += static_cast<int64_t>(next.size());
      cur[cls] = next;
      o0 = o1;
    }
    sw.fronts.push_back(cur);
    prev.swap(cur);
  }
  return sw;
}

Front read_out(const Sweep& sw, int32_t pos, int32_t end_class, int64_t out_carry, Transitions& tr,
               int64_t spike_floor, bool collapse) {
  Front all;
  const auto& fronts = sw.fronts[pos];
  for (int32_t c = 0; c < static_cast<int32_t>(fronts.size()); ++c) {
    if (fronts[c].empty()) continue;
    const double t = tr.ms(c, end_class, out_carry);
    for (int32_t i = 0; i < static_cast<int32_t>(fronts[c].size()); ++i) {
      Entry e = fronts[c][i];
      e.time += t;
      if (collapse) {
        e.mem += std::max(e.spike, spike_floor);  // effective peak
        e.spike = 0;
      }
      e.prev_class = c;
      e.prev_idx = i;
      all.push_back(e);
    }
  }
  prune(all);  // sorted by time ascending; when collapsed, mem strictly decreasing
  if (collapse) std::reverse(all.begin(), all.end());  // mem ascending, time decreasing
  return all;
}

}  // namespace galvatron
