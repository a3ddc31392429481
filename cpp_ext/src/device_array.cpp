#include "device_array.h"

#include <stdexcept>

#ifdef ZK_WITH_CUDA
#include "../cuda/cuda_api.h"
#endif

namespace zk {

DeviceArray::DeviceArray(std::vector<int64_t> shape, std::string typestr, int device, intptr_t stream)
    : shape_(std::move(shape)), typestr_(std::move(typestr)), device_(device), stream_(stream) {
#ifdef ZK_WITH_CUDA
  data_ = cuda::alloc(nbytes(), device_);
#else
  throw std::runtime_error("this build of sdk._kernels has no CUDA support");
#endif
}

DeviceArray::~DeviceArray() {
#ifdef ZK_WITH_CUDA
  cuda::release(data_, device_);
#endif
}

size_t DeviceArray::nbytes() const {
  size_t n = 4;  // float32 / int32
  for (int64_t d : shape_) n *= static_cast<size_t>(d);
  return n;
}

py::dict DeviceArray::cuda_array_interface() const {
  py::list shape;
  for (int64_t d : shape_) shape.append(d);
  py::dict d;
  d["shape"] = py::tuple(shape);
  d["typestr"] = typestr_;
  d["data"] = py::make_tuple(reinterpret_cast<uintptr_t>(data_), false);
  d["strides"] = py::none();
  d["version"] = 3;
  // Version 3 reserves 0: the legacy default stream is 1.
  d["stream"] = stream_ == 0 ? static_cast<intptr_t>(1) : stream_;
  return d;
}

py::array DeviceArray::copy_to_host() const {
  py::array out(py::dtype(typestr_), std::vector<py::ssize_t>(shape_.begin(), shape_.end()));
#ifdef ZK_WITH_CUDA
  void* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    cuda::copy_to_host(dst, data_, nbytes(), device_, stream_);
  }
#endif
  return out;
}

void bind_device_array(py::module_& m) {
  py::class_<DeviceArray>(m, "DeviceArray",
                          "CUDA memory owned by Python (outputs of GPU calls); wrap it with "
                          "torch.as_tensor(a, device='cuda') or cupy.asarray(a).")
      .def_property_readonly("__cuda_array_interface__", &DeviceArray::cuda_array_interface)
      .def_property_readonly("shape",
                             [](const DeviceArray& a) {
                               py::list s;
                               for (int64_t d : a.shape()) s.append(d);
                               return py::tuple(s);
                             })
      .def_property_readonly("dtype", [](const DeviceArray& a) { return py::dtype(a.typestr()); })
      .def_property_readonly("device", &DeviceArray::device)
      .def_property_readonly("nbytes", &DeviceArray::nbytes)
      .def("copy_to_host", &DeviceArray::copy_to_host, "Copy to a new numpy array (waits for the stream).")
      .def("__repr__", [](const DeviceArray& a) {
        std::string s = "DeviceArray(shape=(";
        for (size_t i = 0; i < a.shape().size(); ++i) s += (i ? ", " : "") + std::to_string(a.shape()[i]);
        return s + "), dtype=" + std::string(py::str(py::dtype(a.typestr()))) + ", device=" + std::to_string(a.device()) + ")";
      });
}

}  // namespace zk
