#include "search/sweep.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace galvatron {

int32_t Transitions::class_of(const Layout& l) {
  for (size_t i = 0; i < layouts_.size(); ++i) {
    if (layouts_[i] == l) return static_cast<int32_t>(i);
  }
  layouts_.push_back(l);
  return static_cast<int32_t>(layouts_.size() - 1);
}

int32_t Transitions::free_class() {
  if (free_ < 0) {
    layouts_.push_back(Layout{0, 0, 0, true});  // matches no real layout
    free_ = static_cast<int32_t>(layouts_.size() - 1);
  }
  return free_;
}

double Transitions::ms(int32_t from, int32_t to, int64_t carry_bytes) {
  if (from == to || from == free_ || to == free_) return 0.0;
  if (dim_ != num_classes()) {  // classes were added: start the caches afresh
    dim_ = num_classes();
    carries_.clear();
    cache_.clear();
  }
  size_t c = 0;
  while (c < carries_.size() && carries_[c] != carry_bytes) ++c;
  if (c == carries_.size()) {
    carries_.push_back(carry_bytes);
    cache_.emplace_back(static_cast<size_t>(dim_) * dim_, std::numeric_limits<double>::quiet_NaN());
  }
  double& t = cache_[c][static_cast<size_t>(from) * dim_ + to];
  if (std::isnan(t)) t = redistribution_ms(comm_, layouts_[from], layouts_[to], first_, size_, mb_, carry_bytes);
  return t;
}

Sweep run_sweep(const SweepInput& in, Transitions& tr, int64_t* entries_counter) {
  const ModelTables& model = *in.model;
  // Lower bounds of what the layers after `pos` add (only used with fixed_len).
  std::vector<int64_t> rest_mem(in.max_len + 1, 0);
  std::vector<double> rest_time(in.max_len + 1, 0.0);
  if (in.fixed_len) {
    for (int32_t pos = in.max_len - 1; pos >= 0; --pos) {
      const auto& opts = (*in.options)[model.layer_type_of[in.start + pos]];
      int64_t mm = opts.empty() ? 0 : opts[0].mem;
      double mt = opts.empty() ? 0.0 : opts[0].time;
      for (const Option& o : opts) {
        mm = std::min(mm, o.mem);
        mt = std::min(mt, o.time);
      }
      rest_mem[pos] = rest_mem[pos + 1] + mm;
      rest_time[pos] = rest_time[pos + 1] + mt;
    }
  }
  // Lagrangian lower bounds of the rest (fixed_len): for a multiplier lam >= 0 (ms per byte),
  // the remaining layers take at least sum_p min_o (t_o + lam * m_o) - lam * (memory left).
  // The multipliers are the slopes of the options' lower convex hulls in (memory, time).
  std::vector<double> lams;
  std::vector<std::vector<double>> rest_lag;  // [lam][pos]
  if (in.fixed_len) {
    for (const auto& opts : *in.options) {
      std::vector<std::pair<int64_t, double>> pts;
      for (const Option& o : opts) pts.push_back({o.mem, o.time});
      std::sort(pts.begin(), pts.end());
      std::vector<std::pair<int64_t, double>> hull;  // time decreasing as memory grows
      for (const auto& p : pts) {
        if (!hull.empty() && p.second >= hull.back().second) continue;
        while (hull.size() >= 2) {
          const auto& a = hull[hull.size() - 2];
          const auto& b = hull.back();
          const double cross = (static_cast<double>(b.first - a.first)) * (p.second - a.second) -
                               (b.second - a.second) * static_cast<double>(p.first - a.first);
          if (cross <= 0) hull.pop_back(); else break;
        }
        hull.push_back(p);
      }
      for (size_t i = 1; i < hull.size(); ++i) {
        const double dm = static_cast<double>(hull[i].first - hull[i - 1].first);
        if (dm > 0) lams.push_back((hull[i - 1].second - hull[i].second) / dm);
      }
    }
    std::sort(lams.begin(), lams.end());
    lams.erase(std::unique(lams.begin(), lams.end()), lams.end());
    if (lams.size() > 16) {
      std::vector<double> picked;
      for (size_t i = 0; i < 16; ++i) picked.push_back(lams[i * (lams.size() - 1) / 15]);
      lams = picked;
    }
    rest_lag.assign(lams.size(), std::vector<double>(in.max_len + 1, 0.0));
    for (size_t j = 0; j < lams.size(); ++j) {
      for (int32_t pos = in.max_len - 1; pos >= 0; --pos) {
        const auto& opts = (*in.options)[model.layer_type_of[in.start + pos]];
        double best = std::numeric_limits<double>::infinity();
        for (const Option& o : opts) best = std::min(best, o.time + lams[j] * static_cast<double>(o.mem));
        rest_lag[j][pos] = rest_lag[j][pos + 1] + best;
      }
    }
  }
  Sweep sw;
  std::vector<Front> prev(tr.num_classes());
  prev[in.start_class].push_back(Entry{});
  Front incoming, next;
  std::vector<Source> sources;
  constexpr int64_t kNoCap = std::numeric_limits<int64_t>::max() / 4;
  constexpr double kNoBound = std::numeric_limits<double>::infinity();
  for (int32_t pos = 0; pos < in.max_len; ++pos) {
    const int32_t layer = in.start + pos;
    const int32_t type = model.layer_type_of[layer];
    const int64_t carry = model.layer_types[type].carry_bytes_per_sample;
    const auto& opts = (*in.options)[type];
    std::vector<Front> cur(tr.num_classes());
    const int64_t cap = in.cap_bytes - rest_mem[pos + 1];
    const double tbound = in.time_bound - rest_time[pos + 1];
    // Options are grouped by class (sorted by class in the caller).
    for (size_t o0 = 0; o0 < opts.size();) {
      const int32_t cls = opts[o0].cls;
      size_t o1 = o0;
      while (o1 < opts.size() && opts[o1].cls == cls) ++o1;
      sources.clear();
      for (int32_t pc = 0; pc < static_cast<int32_t>(prev.size()); ++pc) {
        if (prev[pc].empty()) continue;
        Source src;
        src.data = prev[pc].data();
        src.size = prev[pc].size();
        src.dt = tr.ms(pc, cls, carry);
        src.link_class = pc;
        sources.push_back(src);
      }
      // Incoming entries that no option of this class can keep within the bounds are dropped.
      int64_t min_mem = kNoCap;
      double min_time = kNoBound;
      for (size_t o = o0; o < o1; ++o) {
        min_mem = std::min(min_mem, opts[o].mem);
        min_time = std::min(min_time, opts[o].time);
      }
      merge_prune(sources, cap - min_mem, tbound - min_time, incoming);
      sources.clear();
      for (size_t o = o0; o < o1; ++o) {
        Source src;
        src.data = incoming.data();
        src.size = incoming.size();
        src.dt = opts[o].time;
        src.dm = opts[o].mem;
        src.spike_floor = opts[o].spike;
        src.set_option = opts[o].strategy;
        sources.push_back(src);
      }
      merge_prune(sources, cap, tbound, next);
      if (!lams.empty()) {
        size_t out = 0;
        for (const Entry& n : next) {
          bool bounded = false;
          const double left = static_cast<double>(in.cap_bytes - n.mem - n.spike);
          for (size_t j = 0; j < lams.size() && !bounded; ++j) {
            bounded = n.time + rest_lag[j][pos + 1] - lams[j] * left > in.time_bound;
          }
          if (!bounded) next[out++] = n;
        }
        next.resize(out);
      }
      if (entries_counter != nullptr) *entries_counter += static_cast<int64_t>(next.size());
      if (in.entries_used != nullptr) {
        const auto n = static_cast<int64_t>(next.size());
        const int64_t used = in.entries_used->fetch_add(n) + n;
        if (in.max_entries > 0 && used > in.max_entries) {
          throw std::invalid_argument(
              "max_frontier_entries: the search stopped after holding " + std::to_string(used) +
              " frontier entries (limit " + std::to_string(in.max_entries) + ", about " +
              std::to_string(in.max_entries * static_cast<int64_t>(sizeof(Entry)) >> 20) +
              " MiB); narrow the space: fewer global batch sizes, fixed num_microbatches, smaller "
              "max_pp/max_tp/max_sp, fewer dp_types, pp_split 'even', or raise max_frontier_entries");
        }
      }
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
