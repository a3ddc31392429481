// A CUDA allocation owned by Python, exposed through __cuda_array_interface__ (v3).
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

namespace zk {

namespace py = pybind11;

class DeviceArray {
 public:
  // typestr "<f4" or "<i4"; memory is allocated on `device`, produced on `stream`.
  DeviceArray(std::vector<int64_t> shape, std::string typestr, int device, intptr_t stream);
  ~DeviceArray();
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  void* data() const { return data_; }
  int device() const { return device_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  const std::string& typestr() const { return typestr_; }
  size_t nbytes() const;
  py::dict cuda_array_interface() const;
  py::array copy_to_host() const;  // waits for the producing stream

 private:
  std::vector<int64_t> shape_;
  std::string typestr_;
  int device_;
  intptr_t stream_;
  void* data_ = nullptr;
};

void bind_device_array(py::module_& m);

}  // namespace zk
