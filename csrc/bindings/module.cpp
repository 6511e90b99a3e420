// The compiled module galvatron._C. Thin: each register_* adds declarations, no logic.
#include <pybind11/pybind11.h>

#include "search/mesh.h"

namespace py = pybind11;

void register_search(py::module_& m);
void register_comm(py::module_& m);

PYBIND11_MODULE(_C, m) {
  m.doc() = "Galvatron compiled core (cost model, search, layout kernels). Private: use galvatron.*";
  m.attr("__version__") = galvatron::version();
#ifdef GALVATRON_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  register_search(m);
  register_comm(m);
}
