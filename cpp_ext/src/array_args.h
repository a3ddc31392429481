// Validation of the array arguments of the bindings: numpy arrays on the host, objects with
// __cuda_array_interface__ on a GPU. Everything is checked before any memory is touched.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace zk::args {

namespace py = pybind11;

// Every array has fewer elements than this, so all indices fit in int32 on every device.
constexpr int64_t kMaxElements = INT32_MAX;
// Longest spatial side accepted (coordinates stay exact in float32).
constexpr int64_t kMaxSide = 1 << 16;

struct Array {
  std::string name;
  bool on_device = false;
  const void* data = nullptr;
  std::vector<int64_t> shape;
  int device = -1;          // CUDA ordinal (device arrays, after place())
  bool has_stream = false;  // producer stream from __cuda_array_interface__
  intptr_t stream = 0;
  py::object keep;  // the Python object, alive while we use its memory

  int64_t operator[](size_t i) const { return shape[i]; }
  int64_t numel() const;
  const float* f32() const { return static_cast<const float*>(data); }
};

// A C-contiguous float32 array of rank `ndim`: a numpy array or a CUDA array.
Array float_array(py::handle obj, const std::string& name, int ndim);

// Checks that all arrays live in one place (host, or one CUDA device) and returns
// whether that is a device; resolves and checks device pointers.
bool place(std::initializer_list<Array*> arrays);

// ValueError unless every value of a host array is finite.
void require_finite(const Array& a);

// Product of `shape`, ValueError if it overflows or exceeds kMaxElements.
int64_t checked_numel(const std::vector<int64_t>& shape, const std::string& what);

// ValueError unless lo <= value <= hi.
void require_range(int64_t value, int64_t lo, int64_t hi, const std::string& what);

// A (height, width) pair of positive ints from a Python sequence.
std::vector<int64_t> size_pair(py::handle obj, const std::string& name);

}  // namespace zk::args
