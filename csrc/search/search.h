// The plan search: exact optimum of the cost model over the space described in SearchOptions
// (see docs/search.md for the precise space and the algorithm).
#pragma once
#include <vector>

#include "search/cost_model.h"
#include "search/problem.h"

namespace galvatron {

// Layer strategies considered on a pipeline stage of `stage_size` devices (before the per-task
// micro-batch and per-layer-type divisibility filters). Deterministic order.
std::vector<Strategy> enumerate_strategies(const SearchOptions& opt, int32_t stage_size, bool embedding);

// Validates options; throws std::invalid_argument naming the field.
void validate_options(const ModelTables& model, const HardwareTables& hw, const SearchOptions& opt);

SearchOutput search(const ModelTables& model, const HardwareTables& hw, const SearchOptions& opt);

}  // namespace galvatron
