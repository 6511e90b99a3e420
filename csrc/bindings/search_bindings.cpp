#include <pybind11/pybind11.h>

#include "search/mesh.h"

namespace py = pybind11;

void register_search(py::module_& m) {
  m.def("dp_degree", &galvatron::dp_degree, py::arg("world_size"), py::arg("pp"), py::arg("tp"),
        py::arg("sp"), "world_size / (pp*tp*sp); ValueError naming the field if it does not divide");
}
