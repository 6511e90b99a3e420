// Choosing how layers are split across pipeline ranks (v = 1), given per-(rank, start, end)
// chunk times: minimise  sum_r X_r + (m - 1) * max_r X_r  exactly.
#pragma once
#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "search/frontier.h"

namespace galvatron {

struct Cell {
  double x = std::numeric_limits<double>::infinity();  // chunk time; inf = does not fit
  int64_t mem = 0;
  Entry entry;  // the sweep reading behind it
};

class SplitTables {
 public:
  SplitTables(int32_t pp, int32_t layers, bool even_only);
  bool allowed(int32_t r, int32_t a, int32_t b) const;  // a: first layer, b: one past the last
  Cell& at(int32_t r, int32_t a, int32_t b) { return cells_[index(r, a, b)]; }
  const Cell& at(int32_t r, int32_t a, int32_t b) const { return cells_[index(r, a, b)]; }
  int32_t pp() const { return pp_; }
  int32_t layers() const { return layers_; }
  // Range of chunk starts a for rank r ending at b (empty when lo > hi).
  int32_t first_start(int32_t r, int32_t b) const { return r == 0 ? 0 : std::max(r, b - width_); }
  int32_t last_start(int32_t r, int32_t b) const { return r == 0 ? 0 : b - 1; }
  int32_t first_end(int32_t r) const { return r + 1; }
  int32_t last_end(int32_t r) const { return layers_ - (pp_ - 1 - r); }

 private:
  size_t index(int32_t r, int32_t a, int32_t b) const {
    return (static_cast<size_t>(r) * width_ + (a - r)) * width_ + (b - a - 1);
  }
  int32_t pp_, layers_, width_;
  bool even_only_;
  std::vector<int32_t> even_;  // even split bounds
  std::vector<Cell> cells_;
};

// Layers a..b-1 on rank r; even split: the first (layers % pp) ranks get one layer more.
std::vector<int32_t> even_bounds(int32_t layers, int32_t chunks);

struct SplitChoice {
  bool feasible = false;
  double value_ms = 0;      // sum X + (m - 1) max X
  int64_t value_mem = 0;    // min-max memory mode: the largest rank memory
  std::vector<int32_t> bounds;  // pp + 1 entries
};

SplitChoice best_split(const SplitTables& t, int32_t m, int64_t* evaluated);
SplitChoice min_max_memory_split(const SplitTables& t);

}  // namespace galvatron
