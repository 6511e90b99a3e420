#include "search/frontier.h"

#include <algorithm>
#include <iterator>
#include <map>

namespace galvatron {

void prune(Front& f) {
  if (f.size() <= 1) return;
  std::stable_sort(f.begin(), f.end(), [](const Entry& a, const Entry& b) {
    if (a.time != b.time) return a.time < b.time;
    if (a.mem != b.mem) return a.mem < b.mem;
    return a.spike < b.spike;
  });
  // Staircase of kept entries: spike -> smallest mem among kept entries with that spike or less
  // (mem strictly decreasing as spike grows). An entry is dominated when some kept entry (with
  // time <= its time, since we go in time order) has spike <= and mem <=.
  std::map<int64_t, int64_t> stair;
  size_t out = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    const Entry& e = f[i];
    auto it = stair.upper_bound(e.spike);
    if (it != stair.begin() && std::prev(it)->second <= e.mem) continue;  // dominated
    f[out++] = e;
    // Insert (spike, mem) and drop staircase points it now dominates.
    auto pos = stair.insert_or_assign(e.spike, e.mem).first;
    auto next = std::next(pos);
    while (next != stair.end() && next->second >= e.mem) next = stair.erase(next);
  }
  f.resize(out);
}

}  // namespace galvatron
