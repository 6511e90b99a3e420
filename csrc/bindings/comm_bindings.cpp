#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "comm/layout.h"

namespace py = pybind11;

namespace {

// Byte-level view of a contiguous writable/readable buffer (numpy array, torch CPU tensor via
// .numpy(), bytearray...). Returns pointer and total bytes.
py::buffer_info contiguous_info(const py::buffer& b, bool writable, const char* name) {
  py::buffer_info info = b.request(writable);
  py::ssize_t expected = info.itemsize;
  for (py::ssize_t i = info.ndim - 1; i >= 0; --i) {
    if (info.shape[i] > 1 && info.strides[i] != expected) {
      throw std::invalid_argument(std::string(name) + " must be C-contiguous");
    }
    expected *= info.shape[i];
  }
  return info;
}

}  // namespace

void register_comm(py::module_& m) {
  m.def(
      "swap_outer_parts",
      [](const py::buffer& src, const py::buffer& dst, int64_t outer, int64_t parts, int64_t inner,
         int num_threads) {
        auto s = contiguous_info(src, false, "src");
        auto d = contiguous_info(dst, true, "dst");
        if (s.itemsize != d.itemsize) throw std::invalid_argument("src and dst element sizes differ");
        const int64_t n = outer * parts * inner;
        if (s.size != n || d.size != n) {
          throw std::invalid_argument("src and dst must each hold outer*parts*inner=" +
                                      std::to_string(n) + " elements (src has " +
                                      std::to_string(s.size) + ", dst " + std::to_string(d.size) + ")");
        }
        py::gil_scoped_release release;
        galvatron::comm::swap_outer_parts(s.ptr, d.ptr, outer, parts, inner, s.itemsize, num_threads);
      },
      py::arg("src"), py::arg("dst"), py::arg("outer"), py::arg("parts"), py::arg("inner"),
      py::arg("num_threads") = 1,
      "[outer, parts, inner] -> [parts, outer, inner] copy between contiguous buffers");
}
