// Degree arithmetic shared by the cost model, the search and the Python Plan validation.
#pragma once
#include <cstdint>
#include <string>

namespace galvatron {

// Library version string (set by CMake from pyproject.toml).
const char* version();

// Data-parallel degree of a layer that runs on one pipeline stage of a `world_size`-device job
// split into `pp` stages, with tensor-parallel degree `tp` and Ulysses degree `sp`:
//   dp = world_size / (pp * tp * sp).
// Throws std::invalid_argument naming the field when a degree is < 1 or does not divide.
int64_t dp_degree(int64_t world_size, int64_t pp, int64_t tp, int64_t sp);

// True when x is a positive power of two.
inline bool is_power_of_two(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

}  // namespace galvatron
