#include "array_args.h"

#include <limits>
#include <sstream>

#ifdef ZK_WITH_CUDA
#include "../cuda/cuda_api.h"
#endif

namespace zk::args {
namespace {

std::string type_name(py::handle obj) { return py::str(py::type::handle_of(obj).attr("__name__")); }

std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << "(";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << (shape.size() == 1 ? ",)" : ")");
  return s.str();
}

// A Python int (not bool) as int64, TypeError/ValueError otherwise.
int64_t exact_int(py::handle v, const std::string& what) {
  if (py::isinstance<py::bool_>(v) || !(py::isinstance<py::int_>(v) || py::hasattr(v, "__index__")))
    throw py::type_error(what + " must be an int, got " + type_name(v));
  py::int_ i = py::reinterpret_steal<py::int_>(PyNumber_Index(v.ptr()));
  if (!i) throw py::error_already_set();
  int overflow = 0;
  const long long value = PyLong_AsLongLongAndOverflow(i.ptr(), &overflow);
  if (overflow) throw py::value_error(what + " is out of range");
  return value;
}

void check_shape(Array& a, int ndim) {
  if (static_cast<int>(a.shape.size()) != ndim)
    throw py::value_error(a.name + " must have " + std::to_string(ndim) + " dimensions, got shape " +
                          shape_text(a.shape));
  for (int64_t d : a.shape)
    if (d <= 0) throw py::value_error(a.name + " must have positive sizes, got shape " + shape_text(a.shape));
  checked_numel(a.shape, a.name);
}

Array from_numpy(py::handle obj, const std::string& name, int ndim) {
  auto arr = py::reinterpret_borrow<py::array>(obj);
  Array a;
  a.name = name;
  a.keep = arr;
  const py::dtype dt = arr.dtype();
  if (dt.kind() != 'f' || dt.itemsize() != 4 || dt.byteorder() == '>')
    throw py::type_error(name + " must be float32, got " + std::string(py::str(dt)));
  for (py::ssize_t i = 0; i < arr.ndim(); ++i) a.shape.push_back(arr.shape(i));
  check_shape(a, ndim);
  if (!(arr.flags() & py::array::c_style)) throw py::value_error(name + " must be C-contiguous");
  a.data = arr.data();
  if (reinterpret_cast<uintptr_t>(a.data) % alignof(float) != 0) throw py::value_error(name + " is not aligned");
  return a;
}

void check_cai_strides(const Array& a, py::handle strides) {
  if (strides.is_none()) return;
  if (!py::isinstance<py::tuple>(strides) || py::len(strides) != a.shape.size())
    throw py::value_error(a.name + ": __cuda_array_interface__ strides must be None or a tuple per dimension");
  auto t = py::reinterpret_borrow<py::tuple>(strides);
  int64_t expected = 4;
  for (size_t i = a.shape.size(); i-- > 0;) {
    const int64_t s = exact_int(t[i], a.name + " stride");
    if (a.shape[i] != 1 && s != expected) throw py::value_error(a.name + " must be C-contiguous");
    expected *= a.shape[i];
  }
}

Array from_cuda_interface(py::handle obj, const std::string& name, int ndim) {
  py::object cai = obj.attr("__cuda_array_interface__");
  if (!py::isinstance<py::dict>(cai)) throw py::type_error(name + ": __cuda_array_interface__ must be a dict");
  auto d = py::reinterpret_borrow<py::dict>(cai);
  for (const char* key : {"shape", "typestr", "data"})
    if (!d.contains(key)) throw py::type_error(name + ": __cuda_array_interface__ lacks '" + key + "'");
  Array a;
  a.name = name;
  a.on_device = true;
  a.keep = py::reinterpret_borrow<py::object>(obj);
  if (!py::isinstance<py::tuple>(d["shape"])) throw py::type_error(name + ": shape must be a tuple");
  for (py::handle v : py::reinterpret_borrow<py::tuple>(d["shape"])) a.shape.push_back(exact_int(v, name + " shape"));
  if (!py::isinstance<py::str>(d["typestr"]) || d["typestr"].cast<std::string>() != "<f4")
    throw py::type_error(name + " must be float32 ('<f4'), got typestr " + std::string(py::repr(d["typestr"])));
  check_shape(a, ndim);
  if (d.contains("strides")) check_cai_strides(a, d["strides"]);
  if (d.contains("mask") && !d["mask"].is_none()) throw py::value_error(name + ": masked arrays are not supported");
  py::object data = d["data"];
  if (!py::isinstance<py::tuple>(data) || py::len(data) != 2) throw py::type_error(name + ": data must be (ptr, readonly)");
  const int64_t ptr = exact_int(py::reinterpret_borrow<py::tuple>(data)[0], name + " data pointer");
  if (ptr == 0) throw py::value_error(name + ": null data pointer");
  if (ptr % alignof(float) != 0) throw py::value_error(name + " is not aligned");
  a.data = reinterpret_cast<const void*>(static_cast<uintptr_t>(ptr));
  if (d.contains("stream") && !d["stream"].is_none()) {
    a.has_stream = true;
    a.stream = static_cast<intptr_t>(exact_int(d["stream"], name + " stream"));
  }
  return a;
}

#ifdef ZK_WITH_CUDA
void resolve_device(Array& a) {
  const cuda::Pointer info = cuda::inspect_pointer(a.data);
  if (!info.on_device) throw py::value_error(a.name + ": __cuda_array_interface__ pointer is not CUDA device memory");
  a.device = info.device;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(a.data);
  const uintptr_t bytes = static_cast<uintptr_t>(a.numel()) * 4;
  if (info.range_known && (begin < info.base || begin - info.base + bytes > info.size))
    throw py::value_error(a.name + ": shape " + shape_text(a.shape) + " exceeds its CUDA allocation");
}
#endif

}  // namespace

int64_t Array::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t checked_numel(const std::vector<int64_t>& shape, const std::string& what) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw py::value_error(what + ": negative size");
    if (d != 0 && n > kMaxElements / d)
      throw py::value_error(what + " would have more than 2**31 - 1 elements, shape " + shape_text(shape));
    n *= d;
  }
  return n;
}

void require_range(int64_t value, int64_t lo, int64_t hi, const std::string& what) {
  if (value < lo || value > hi)
    throw py::value_error(what + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                          std::to_string(value));
}

Array float_array(py::handle obj, const std::string& name, int ndim) {
  if (py::isinstance<py::array>(obj)) return from_numpy(obj, name, ndim);
  if (py::hasattr(obj, "__cuda_array_interface__")) return from_cuda_interface(obj, name, ndim);
  throw py::type_error(name + " must be a numpy.ndarray (CPU) or an object with __cuda_array_interface__ (GPU), got " +
                       type_name(obj));
}

bool place(std::initializer_list<Array*> arrays) {
  const bool device = (*arrays.begin())->on_device;
  for (Array* a : arrays)
    if (a->on_device != device)
      throw py::value_error("arrays must all be numpy arrays or all CUDA arrays (" + a->name + " differs)");
  if (!device) return false;
#ifdef ZK_WITH_CUDA
  if (cuda::device_count() == 0)
    throw std::runtime_error("CUDA arrays given, but no CUDA device is usable (" + cuda::runtime_info() + ")");
  for (Array* a : arrays) resolve_device(*a);
  for (Array* a : arrays)
    if (a->device != (*arrays.begin())->device)
      throw py::value_error("arrays are on different CUDA devices (" + a->name + ")");
  return true;
#else
  throw std::runtime_error("CUDA arrays given, but this build of sdk._kernels has no CUDA support");
#endif
}

void require_finite(const Array& a) {
  const float* p = a.f32();
  const int64_t n = a.numel();
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) bad |= !(p[i] - p[i] == 0.f);  // false for NaN and +-inf
  if (bad) throw py::value_error(a.name + " contains NaN or infinite values");
}

std::vector<int64_t> size_pair(py::handle obj, const std::string& name) {
  if (!py::isinstance<py::sequence>(obj) || py::isinstance<py::str>(obj) || py::len(obj) != 2)
    throw py::type_error(name + " must be a (height, width) pair of ints");
  auto seq = py::reinterpret_borrow<py::sequence>(obj);
  std::vector<int64_t> out;
  for (int i = 0; i < 2; ++i) {
    out.push_back(exact_int(seq[i], name));
    require_range(out.back(), 1, kMaxSide, name);
  }
  return out;
}

}  // namespace zk::args
