#include "search/split.h"

#include <algorithm>

namespace galvatron {

SplitTables::SplitTables(int32_t pp, int32_t layers, bool even_only)
    : pp_(pp), layers_(layers), width_(layers - pp + 1), even_only_(even_only), even_(even_bounds(layers, pp)) {
  cells_.resize(static_cast<size_t>(pp) * width_ * width_);
}

std::vector<int32_t> even_bounds(int32_t layers, int32_t chunks) {
  std::vector<int32_t> b{0};
  const int32_t base = layers / chunks, extra = layers % chunks;
  for (int32_t c = 0; c < chunks; ++c) b.push_back(b.back() + base + (c < extra ? 1 : 0));
  return b;
}

bool SplitTables::allowed(int32_t r, int32_t a, int32_t b) const {
  if (a < r || b <= a || layers_ - b < pp_ - 1 - r) return false;
  if (r == 0 && a != 0) return false;
  if (r == pp_ - 1 && b != layers_) return false;
  if (b - a > width_) return false;
  return !even_only_ || (even_[r] == a && even_[r + 1] == b);
}

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// min sum of X over splits with every X <= tau; fills bounds. Returns inf when none.
double min_sum(const SplitTables& t, double tau, std::vector<int32_t>* bounds) {
  const int32_t pp = t.pp(), L = t.layers();
  std::vector<double> f(static_cast<size_t>(pp) * (L + 1), kInf);
  std::vector<int32_t> arg(f.size(), -1);
  for (int32_t r = 0; r < pp; ++r) {
    for (int32_t b = t.first_end(r); b <= t.last_end(r); ++b) {
      double best = kInf;
      int32_t best_a = -1;
      for (int32_t a = t.first_start(r, b); a <= t.last_start(r, b); ++a) {
        const double x = t.at(r, a, b).x;  // inf unless allowed and filled
        if (!(x <= tau)) continue;
        const double prev = r == 0 ? 0.0 : f[static_cast<size_t>(r - 1) * (L + 1) + a];
        if (prev + x < best) {
          best = prev + x;
          best_a = a;
        }
      }
      f[static_cast<size_t>(r) * (L + 1) + b] = best;
      arg[static_cast<size_t>(r) * (L + 1) + b] = best_a;
    }
  }
  const double total = f[static_cast<size_t>(pp - 1) * (L + 1) + L];
  if (total < kInf && bounds != nullptr) {
    bounds->assign(pp + 1, 0);
    (*bounds)[pp] = L;
    for (int32_t r = pp - 1; r >= 0; --r) {
      (*bounds)[r] = arg[static_cast<size_t>(r) * (L + 1) + (*bounds)[r + 1]];
    }
  }
  return total;
}

double objective(const SplitTables& t, const std::vector<int32_t>& bounds, int32_t m) {
  double sum = 0, mx = 0;
  for (int32_t r = 0; r < t.pp(); ++r) {
    const double x = t.at(r, bounds[r], bounds[r + 1]).x;
    sum += x;
    mx = std::max(mx, x);
  }
  return sum + (m - 1) * mx;
}

}  // namespace

SplitChoice best_split(const SplitTables& t, int32_t m, int64_t* evaluated) {
  SplitChoice out;
  std::vector<int32_t> bounds;
  const double lb = min_sum(t, kInf, &bounds);
  if (!(lb < kInf)) return out;
  out.feasible = true;
  out.bounds = bounds;
  out.value_ms = objective(t, bounds, m);
  if (evaluated != nullptr) ++*evaluated;
  if (m == 1 || t.pp() == 1) return out;
  // The max term: enumerate its value tau over all chunk times, smallest first.
  std::vector<double> taus;
  for (int32_t r = 0; r < t.pp(); ++r) {
    for (int32_t b = t.first_end(r); b <= t.last_end(r); ++b) {
      for (int32_t a = t.first_start(r, b); a <= t.last_start(r, b); ++a) {
        if (t.at(r, a, b).x < kInf) taus.push_back(t.at(r, a, b).x);
      }
    }
  }
  std::sort(taus.begin(), taus.end());
  taus.erase(std::unique(taus.begin(), taus.end()), taus.end());
  // Smallest feasible tau (feasibility is monotone in tau).
  size_t lo = 0, hi = taus.size() - 1;
  while (lo < hi) {
    const size_t mid = (lo + hi) / 2;
    if (min_sum(t, taus[mid], nullptr) < kInf) hi = mid; else lo = mid + 1;
  }
  for (size_t i = lo; i < taus.size(); ++i) {
    if ((m - 1) * taus[i] + lb >= out.value_ms) break;  // no larger tau can do better
    if (!(min_sum(t, taus[i], &bounds) < kInf)) continue;
    if (evaluated != nullptr) ++*evaluated;
    const double v = objective(t, bounds, m);
    if (v < out.value_ms) {
      out.value_ms = v;
      out.bounds = bounds;
    }
  }
  return out;
}

SplitChoice min_max_memory_split(const SplitTables& t) {
  const int32_t pp = t.pp(), L = t.layers();
  constexpr int64_t kBig = std::numeric_limits<int64_t>::max();
  std::vector<int64_t> g(static_cast<size_t>(pp) * (L + 1), kBig);
  std::vector<int32_t> arg(g.size(), -1);
  for (int32_t r = 0; r < pp; ++r) {
    for (int32_t b = t.first_end(r); b <= t.last_end(r); ++b) {
      for (int32_t a = t.first_start(r, b); a <= t.last_start(r, b); ++a) {
        if (!(t.at(r, a, b).x < kInf)) continue;
        const int64_t prev = r == 0 ? 0 : g[static_cast<size_t>(r - 1) * (L + 1) + a];
        if (prev == kBig) continue;
        const int64_t v = std::max(prev, t.at(r, a, b).mem);
        if (v < g[static_cast<size_t>(r) * (L + 1) + b]) {
          g[static_cast<size_t>(r) * (L + 1) + b] = v;
          arg[static_cast<size_t>(r) * (L + 1) + b] = a;
        }
      }
    }
  }
  SplitChoice out;
  const int64_t total = g[static_cast<size_t>(pp - 1) * (L + 1) + L];
  if (total == kBig) return out;
  out.feasible = true;
  out.value_mem = total;
  out.bounds.assign(pp + 1, 0);
  out.bounds[pp] = L;
  for (int32_t r = pp - 1; r >= 0; --r) out.bounds[r] = arg[static_cast<size_t>(r) * (L + 1) + out.bounds[r + 1]];
  return out;
}

}  // namespace galvatron
