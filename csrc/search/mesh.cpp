#include "search/mesh.h"

#include <stdexcept>

namespace galvatron {

const char* version() { return GALVATRON_VERSION; }

static void require_positive(const char* field, int64_t value) {
  if (value < 1) {
    throw std::invalid_argument(std::string(field) + " must be a positive integer (>= 1), got " +
                                std::to_string(value));
  }
}

int64_t dp_degree(int64_t world_size, int64_t pp, int64_t tp, int64_t sp) {
  require_positive("world_size", world_size);
  require_positive("pp", pp);
  require_positive("tp", tp);
  require_positive("sp", sp);
  if (world_size % pp != 0) {
    throw std::invalid_argument("pp=" + std::to_string(pp) + " does not divide world_size=" +
                                std::to_string(world_size) + "; accepted: divisors of world_size");
  }
  const int64_t per_stage = world_size / pp;
  if (per_stage % (tp * sp) != 0) {
    throw std::invalid_argument("tp*sp=" + std::to_string(tp * sp) +
                                " does not divide the devices per stage (world_size/pp=" +
                                std::to_string(per_stage) + ")");
  }
  return per_stage / (tp * sp);
}

}  // namespace galvatron
