#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "comm/layout.h"

namespace py = pybind11;
namespace comm = galvatron::comm;

namespace {

using Shapes = std::vector<std::vector<int64_t>>;

// Byte-level view of a contiguous writable/readable buffer (numpy array, torch CPU tensor via
// .numpy(), bytearray...). Returns pointer and total bytes.
py::buffer_info contiguous_info(const py::buffer& b, bool writable, const std::string& name) {
  py::buffer_info info = b.request(writable);
  py::ssize_t expected = info.itemsize;
  for (py::ssize_t i = info.ndim - 1; i >= 0; --i) {
    if (info.shape[i] > 1 && info.strides[i] != expected) {
      throw std::invalid_argument(name + " must be C-contiguous");
    }
    expected *= info.shape[i];
  }
  return info;
}

void check_numel(const py::buffer_info& info, int64_t numel, int64_t itemsize, const std::string& name) {
  if (info.itemsize != itemsize) {
    throw std::invalid_argument(name + " has element size " + std::to_string(info.itemsize) +
                                ", expected " + std::to_string(itemsize) + " like the others");
  }
  if (info.size != numel) {
    throw std::invalid_argument(name + " holds " + std::to_string(info.size) + " elements, its shape needs " +
                                std::to_string(numel));
  }
}

comm::Executor cpu_executor(int num_threads, bool emulate_cuda) {
  comm::Executor e;
  e.backend = emulate_cuda ? comm::Backend::cpu_emulating_cuda : comm::Backend::cpu;
  e.num_threads = num_threads;
  return e;
}

comm::Executor cuda_executor(uintptr_t stream) {
  comm::Executor e;
  e.backend = comm::Backend::cuda;
  e.cuda_stream = reinterpret_cast<void*>(stream);
  return e;
}

int64_t total_numel(const Shapes& shapes) {
  int64_t n = 0;
  for (const auto& s : shapes) n += comm::shape_numel(s, "shapes");
  return n;
}

// Buffers of the N-d tensors (srcs of a split, dsts of a gather) and the packed buffer.
struct Views {
  std::vector<py::buffer_info> infos;
  std::vector<void*> tensors;
  void* packed = nullptr;
  int64_t elem_bytes = 0;
};

Views views(const std::vector<py::buffer>& tensors, const py::buffer& packed, const Shapes& shapes,
            bool tensors_writable, const char* tensors_name, const char* packed_name) {
  if (tensors.size() != shapes.size()) {
    throw std::invalid_argument(std::string(tensors_name) + " and shapes differ in length");
  }
  Views v;
  v.infos.push_back(contiguous_info(packed, !tensors_writable, packed_name));
  v.elem_bytes = v.infos[0].itemsize;
  check_numel(v.infos[0], total_numel(shapes), v.elem_bytes, packed_name);
  v.packed = v.infos[0].ptr;
  for (size_t k = 0; k < tensors.size(); ++k) {
    const std::string name = std::string(tensors_name) + "[" + std::to_string(k) + "]";
    v.infos.push_back(contiguous_info(tensors[k], tensors_writable, name));
    check_numel(v.infos.back(), comm::shape_numel(shapes[k], "shapes"), v.elem_bytes, name);
    v.tensors.push_back(v.infos.back().ptr);
  }
  return v;
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
        comm::swap_outer_parts(s.ptr, d.ptr, outer, parts, inner, s.itemsize, num_threads);
      },
      py::arg("src"), py::arg("dst"), py::arg("outer"), py::arg("parts"), py::arg("inner"),
      py::arg("num_threads") = 1,
      "[outer, parts, inner] -> [parts, outer, inner] copy between contiguous buffers");

  m.def(
      "split_dim_to_chunks",
      [](const std::vector<py::buffer>& srcs, const py::buffer& dst, const Shapes& shapes,
         int64_t dim, int64_t num_chunks, int num_threads, bool emulate_cuda) {
        Views v = views(srcs, dst, shapes, false, "srcs", "dst");
        std::vector<const void*> ptrs(v.tensors.begin(), v.tensors.end());
        py::gil_scoped_release release;
        comm::split_dim_to_chunks(ptrs, v.packed, shapes, dim, num_chunks, v.elem_bytes,
                                  cpu_executor(num_threads, emulate_cuda));
      },
      py::arg("srcs"), py::arg("dst"), py::arg("shapes"), py::arg("dim"), py::arg("num_chunks"),
      py::arg("num_threads") = 1, py::arg("emulate_cuda") = false,
      "srcs[k] of shapes[k] -> dst = [num_chunks][k][chunk of srcs[k] along dim] (see layout.h)");

  m.def(
      "chunks_to_dim",
      [](const py::buffer& src, const std::vector<py::buffer>& dsts, const Shapes& shapes,
         int64_t dim, int64_t num_chunks, int num_threads, bool emulate_cuda) {
        Views v = views(dsts, src, shapes, true, "dsts", "src");
        py::gil_scoped_release release;
        comm::chunks_to_dim(v.packed, v.tensors, shapes, dim, num_chunks, v.elem_bytes,
                            cpu_executor(num_threads, emulate_cuda));
      },
      py::arg("src"), py::arg("dsts"), py::arg("shapes"), py::arg("dim"), py::arg("num_chunks"),
      py::arg("num_threads") = 1, py::arg("emulate_cuda") = false,
      "inverse of split_dim_to_chunks: src = [num_chunks][k][...] -> dsts[k] of shapes[k]");

  // CUDA variants on raw device pointers (validated on the Python side: contiguous tensors of
  // the same device and element size). ValueError when built without GALVATRON_CUDA.
  m.def(
      "cuda_split_dim_to_chunks",
      [](const std::vector<uintptr_t>& srcs, uintptr_t dst, const Shapes& shapes, int64_t dim,
         int64_t num_chunks, int64_t elem_bytes, uintptr_t stream) {
        std::vector<const void*> ptrs;
        for (uintptr_t p : srcs) ptrs.push_back(reinterpret_cast<const void*>(p));
        py::gil_scoped_release release;
        comm::split_dim_to_chunks(ptrs, reinterpret_cast<void*>(dst), shapes, dim, num_chunks,
                                  elem_bytes, cuda_executor(stream));
      },
      py::arg("srcs"), py::arg("dst"), py::arg("shapes"), py::arg("dim"), py::arg("num_chunks"),
      py::arg("elem_bytes"), py::arg("stream") = 0);

  m.def(
      "cuda_chunks_to_dim",
      [](uintptr_t src, const std::vector<uintptr_t>& dsts, const Shapes& shapes, int64_t dim,
         int64_t num_chunks, int64_t elem_bytes, uintptr_t stream) {
        std::vector<void*> ptrs;
        for (uintptr_t p : dsts) ptrs.push_back(reinterpret_cast<void*>(p));
        py::gil_scoped_release release;
        comm::chunks_to_dim(reinterpret_cast<const void*>(src), ptrs, shapes, dim, num_chunks,
                            elem_bytes, cuda_executor(stream));
      },
      py::arg("src"), py::arg("dsts"), py::arg("shapes"), py::arg("dim"), py::arg("num_chunks"),
      py::arg("elem_bytes"), py::arg("stream") = 0);
}
