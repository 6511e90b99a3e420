#include "search/frontier.h"

#include <algorithm>

namespace galvatron {

namespace {

// Staircase of kept points as (mem ascending, eff = mem + spike strictly descending). A new
// entry is dominated when a kept one (no slower) has mem <= and eff <=: for any spike S still
// to come, mem + max(spike, S) = max(eff, mem + S) is then no larger.
class Stair {
 public:
  bool dominated(int64_t mem, int64_t eff) const {
    auto it = std::upper_bound(p_.begin(), p_.end(), mem,
                               [](int64_t m, const std::pair<int64_t, int64_t>& q) { return m < q.first; });
    return it != p_.begin() && std::prev(it)->second <= eff;
  }
  void insert(int64_t mem, int64_t eff) {
    auto pos = std::upper_bound(p_.begin(), p_.end(), mem,
                                [](int64_t m, const std::pair<int64_t, int64_t>& q) { return m < q.first; });
    if (pos != p_.begin() && std::prev(pos)->first == mem) {
      --pos;
      pos->second = eff;
    } else {
      pos = p_.insert(pos, {mem, eff});
    }
    auto next = std::next(pos);
    auto last = next;
    while (last != p_.end() && last->second >= eff) ++last;
    p_.erase(next, last);
  }

 private:
  std::vector<std::pair<int64_t, int64_t>> p_;
};

}  // namespace

void merge_prune(const std::vector<Source>& sources, int64_t cap, double time_bound, Front& out) {
  out.clear();
  // Min-heap of (time, source) over the source heads; ties: lowest source index first.
  using Head = std::pair<double, size_t>;
  std::vector<Head> heap;
  std::vector<size_t> pos(sources.size(), 0);
  for (size_t s = 0; s < sources.size(); ++s) {
    if (sources[s].size > 0) heap.push_back({sources[s].data[0].time + sources[s].dt, s});
  }
  auto later = [](const Head& a, const Head& b) { return a.first > b.first || (a.first == b.first && a.second > b.second); };
  std::make_heap(heap.begin(), heap.end(), later);
  Stair stair;
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const auto [t, s] = heap.back();
    if (t > time_bound) break;  // every remaining head is at least as slow
    const Source& src = sources[s];
    const size_t idx = pos[s]++;
    if (pos[s] < src.size) {
      heap.back() = {src.data[pos[s]].time + src.dt, s};
      std::push_heap(heap.begin(), heap.end(), later);
    } else {
      heap.pop_back();
    }
    const Entry& in = src.data[idx];
    const int64_t mem = in.mem + src.dm;
    const int64_t spike = std::max(in.spike, src.spike_floor);
    if (mem + spike > cap || stair.dominated(mem, mem + spike)) continue;
    stair.insert(mem, mem + spike);
    Entry e = in;
    e.time = t;
    e.mem = mem;
    e.spike = spike;
    if (src.link_class >= 0) {
      e.prev_class = src.link_class;
      e.prev_idx = static_cast<int32_t>(idx);
    }
    if (src.set_option >= 0) e.option = src.set_option;
    out.push_back(e);
  }
}

void prune(Front& f) {
  if (f.size() <= 1) return;
  std::stable_sort(f.begin(), f.end(), [](const Entry& a, const Entry& b) {
    if (a.time != b.time) return a.time < b.time;
    if (a.mem != b.mem) return a.mem < b.mem;
    return a.spike < b.spike;
  });
  Stair stair;
  size_t out = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    const Entry& e = f[i];
    if (stair.dominated(e.mem, e.mem + e.spike)) continue;
    stair.insert(e.mem, e.mem + e.spike);
    f[out++] = e;
  }
  f.resize(out);
}

}  // namespace galvatron
