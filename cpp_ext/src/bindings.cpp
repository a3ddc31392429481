// sdk._kernels: pybind11 bindings. Arguments are validated here, before any memory is read;
// then the GIL is released and the CPU or CUDA implementation runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "array_args.h"
#include "device_array.h"
#include "zk/cpu_isa.h"
#include "zk/ops.h"
#include "zk/parallel.h"
#include "zk/sigmoid.h"

#ifdef ZK_WITH_CUDA
#include "../cuda/cuda_api.h"
#endif

#ifndef ZK_CUDA_ARCHS
#define ZK_CUDA_ARCHS ""
#endif
#ifndef ZK_NVCC_VERSION
#define ZK_NVCC_VERSION ""
#endif

namespace py = pybind11;
using zk::args::Array;

namespace {

constexpr int64_t kMaxCrop = 4096;

void check_sides(const Array& a, size_t from) {
  for (size_t i = from; i < a.shape.size(); ++i)
    zk::args::require_range(a[i], 1, zk::args::kMaxSide, a.name + " spatial size");
}

void check_threads(int64_t threads) { zk::args::require_range(threads, 0, 4096, "num_threads"); }

template <class T>
py::array_t<T> host_output(const std::vector<int64_t>& shape) {
  return py::array_t<T>(std::vector<py::ssize_t>(shape.begin(), shape.end()));
}

#ifdef ZK_WITH_CUDA
// Makes our stream wait for the producer streams of the inputs; sets the device.
int prepare_device(std::initializer_list<const Array*> inputs, intptr_t stream) {
  const int device = (*inputs.begin())->device;
  zk::cuda::DeviceGuard guard(device);
  for (const Array* a : inputs)
    if (a->has_stream) zk::cuda::wait_on(a->stream, stream);
  return device;
}

std::unique_ptr<zk::DeviceArray> device_output(const std::vector<int64_t>& shape, const char* typestr, int device,
                                               intptr_t stream) {
  return std::make_unique<zk::DeviceArray>(shape, typestr, device, stream);
}
#endif

#ifndef ZK_WITH_CUDA
[[noreturn]] void no_cuda() { throw std::runtime_error("this build of sdk._kernels has no CUDA support"); }
#endif

py::tuple masked_crops(py::handle image_obj, py::handle logits_obj, int64_t crop_size, int64_t sampling_ratio,
                       int64_t num_threads, intptr_t stream) {
  Array image = zk::args::float_array(image_obj, "image", 4);
  Array logits = zk::args::float_array(logits_obj, "mask_logits", 4);
  zk::args::require_range(crop_size, 1, kMaxCrop, "crop_size");
  zk::args::require_range(sampling_ratio, -1, 1024, "sampling_ratio");
  check_threads(num_threads);
  check_sides(image, 2);
  check_sides(logits, 2);
  if (image[0] != logits[0])
    throw py::value_error("image and mask_logits have different batch sizes (" + std::to_string(image[0]) + " vs " +
                          std::to_string(logits[0]) + ")");
  const zk::CropProblem p{image[0], image[1], image[2], image[3], logits[1], logits[2], logits[3], crop_size,
                          static_cast<int>(sampling_ratio), zk::mask_on_threshold(), static_cast<int>(num_threads)};
  const std::vector<int64_t> crop_shape{p.B, p.Q, p.C, p.S, p.S}, box_shape{p.B, p.Q, 4};
  zk::args::checked_numel(crop_shape, "crops");
  zk::args::checked_numel(box_shape, "boxes");
  if (!zk::args::place({&image, &logits})) {
    zk::args::require_finite(image);
    zk::args::require_finite(logits);
    auto crops = host_output<float>(crop_shape);
    auto boxes = host_output<int32_t>(box_shape);
    float* c = crops.mutable_data();
    int32_t* b = boxes.mutable_data();
    {
      py::gil_scoped_release release;
      zk::masked_crops_cpu(p, image.f32(), logits.f32(), c, b);
    }
    return py::make_tuple(crops, boxes);
  }
#ifdef ZK_WITH_CUDA
  const int device = prepare_device({&image, &logits}, stream);
  zk::cuda::DeviceGuard guard(device);
  auto crops = device_output(crop_shape, "<f4", device, stream);
  auto boxes = device_output(box_shape, "<i4", device, stream);
  {
    py::gil_scoped_release release;
    zk::cuda::masked_crops(p, image.f32(), logits.f32(), static_cast<float*>(crops->data()),
                           static_cast<int32_t*>(boxes->data()), stream);
  }
  return py::make_tuple(py::cast(std::move(crops)), py::cast(std::move(boxes)));
#else
  no_cuda();
#endif
}

py::object mask_pool(py::handle features_obj, py::handle logits_obj, const std::string& mode, int64_t num_threads,
                     intptr_t stream) {
  Array features = zk::args::float_array(features_obj, "features", 4);
  Array logits = zk::args::float_array(logits_obj, "mask_logits", 4);
  if (mode != "soft" && mode != "hard") throw py::value_error("mode must be 'soft' or 'hard', got '" + mode + "'");
  check_threads(num_threads);
  check_sides(features, 2);
  check_sides(logits, 2);
  if (features[0] != logits[0])
    throw py::value_error("features and mask_logits have different batch sizes (" + std::to_string(features[0]) +
                          " vs " + std::to_string(logits[0]) + ")");
  const zk::PoolProblem p{features[0], features[1], features[2], features[3], logits[1], logits[2], logits[3],
                          mode == "hard", zk::mask_on_threshold(), static_cast<int>(num_threads)};
  const std::vector<int64_t> shape{p.B, p.Q, p.C};
  zk::args::checked_numel(shape, "pooled");
  if (!zk::args::place({&features, &logits})) {
    zk::args::require_finite(features);
    zk::args::require_finite(logits);
    auto out = host_output<float>(shape);
    float* o = out.mutable_data();
    {
      py::gil_scoped_release release;
      zk::mask_pool_cpu(p, features.f32(), logits.f32(), o);
    }
    return std::move(out);
  }
#ifdef ZK_WITH_CUDA
  const int device = prepare_device({&features, &logits}, stream);
  zk::cuda::DeviceGuard guard(device);
  auto out = device_output(shape, "<f4", device, stream);
  {
    py::gil_scoped_release release;
    zk::cuda::mask_pool(p, features.f32(), logits.f32(), static_cast<float*>(out->data()), stream);
  }
  return py::cast(std::move(out));
#else
  no_cuda();
#endif
}

// Per-class offsets subtracted after the resize (empty: no calibration).
std::vector<float> calibration(py::handle mask_obj, double calibrate, int64_t K) {
  if (!std::isfinite(calibrate)) throw py::value_error("calibrate must be finite");
  if (mask_obj.is_none() || calibrate == 0.0) return {};
  py::array mask = py::array::ensure(mask_obj);
  if (!mask) throw py::type_error("calibrate_mask must be a bool array of shape (K,)");
  const py::dtype dt = mask.dtype();
  if (!(dt.kind() == 'b' || (dt.kind() == 'u' && dt.itemsize() == 1)))
    throw py::type_error("calibrate_mask must be bool or uint8, got " + std::string(py::str(dt)));
  if (mask.ndim() != 1 || mask.shape(0) != K)
    throw py::value_error("calibrate_mask must have shape (" + std::to_string(K) + ",)");
  py::array contiguous = py::array::ensure(mask, py::array::c_style);
  const auto* m = static_cast<const uint8_t*>(contiguous.data());
  std::vector<float> offsets(K);
  for (int64_t c = 0; c < K; ++c) offsets[c] = m[c] ? static_cast<float>(calibrate) : 0.f;
  return offsets;
}

py::object semantic_inference(py::handle logits_obj, py::handle probs_obj, py::handle image_size, py::handle out_size,
                              py::handle padded_size, py::handle calibrate_mask, double calibrate, bool return_scores,
                              int64_t num_threads, intptr_t stream) {
  Array logits = zk::args::float_array(logits_obj, "mask_logits", 4);
  Array probs = zk::args::float_array(probs_obj, "class_probs", 3);
  check_threads(num_threads);
  check_sides(logits, 2);
  if (probs[0] != logits[0] || probs[1] != logits[1])
    throw py::value_error("class_probs must be [B, Q, K] with B, Q of mask_logits [B, Q, h, w]");
  const auto image = zk::args::size_pair(image_size, "image_size");
  const auto out = zk::args::size_pair(out_size, "out_size");
  std::vector<int64_t> padded{4 * logits[2], 4 * logits[3]};
  if (!padded_size.is_none()) padded = zk::args::size_pair(padded_size, "padded_size");
  if (image[0] > padded[0] || image[1] > padded[1])
    throw py::value_error("image_size must not exceed the padded size (" + std::to_string(padded[0]) + ", " +
                          std::to_string(padded[1]) + ")");
  const zk::SemanticProblem p{logits[0], logits[1], logits[2], logits[3], probs[2], padded[0], padded[1],
                              image[0],  image[1],  out[0],    out[1],    static_cast<int>(num_threads)};
  const std::vector<int64_t> label_shape{p.B, p.oh, p.ow}, score_shape{p.B, p.K, p.oh, p.ow};
  zk::args::checked_numel(label_shape, "labels");
  if (return_scores) zk::args::checked_numel(score_shape, "scores");
  const std::vector<float> cal = calibration(calibrate_mask, calibrate, p.K);
  const float* cal_ptr = cal.empty() ? nullptr : cal.data();
  if (!zk::args::place({&logits, &probs})) {
    zk::args::require_finite(logits);
    zk::args::require_finite(probs);
    auto labels = host_output<int32_t>(label_shape);
    py::array_t<float> scores;
    if (return_scores) scores = host_output<float>(score_shape);
    int32_t* l = labels.mutable_data();
    float* s = return_scores ? scores.mutable_data() : nullptr;
    {
      py::gil_scoped_release release;
      zk::semantic_cpu(p, logits.f32(), probs.f32(), cal_ptr, l, s);
    }
    if (return_scores) return py::make_tuple(labels, scores);
    return std::move(labels);
  }
#ifdef ZK_WITH_CUDA
  const int device = prepare_device({&logits, &probs}, stream);
  zk::cuda::DeviceGuard guard(device);
  auto labels = device_output(label_shape, "<i4", device, stream);
  std::unique_ptr<zk::DeviceArray> scores;
  if (return_scores) scores = device_output(score_shape, "<f4", device, stream);
  {
    py::gil_scoped_release release;
    zk::cuda::semantic(p, logits.f32(), probs.f32(), cal_ptr, static_cast<int32_t*>(labels->data()),
                       scores ? static_cast<float*>(scores->data()) : nullptr, stream);
  }
  if (return_scores) return py::make_tuple(py::cast(std::move(labels)), py::cast(std::move(scores)));
  return py::cast(std::move(labels));
#else
  no_cuda();
#endif
}

py::list split_archs(const std::string& s) {
  py::list out;
  size_t start = 0;
  while (start < s.size()) {
    const size_t end = s.find(',', start);
    out.append(s.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

py::dict build_info() {
  py::dict d;
#ifdef ZK_WITH_CUDA
  d["cuda"] = true;
  d["cuda_runtime"] = zk::cuda::runtime_info();
#else
  d["cuda"] = false;
#endif
  d["cuda_archs"] = split_archs(ZK_CUDA_ARCHS);
  d["nvcc"] = std::string(ZK_NVCC_VERSION);
#if defined(__clang__)
  d["cxx"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  d["cxx"] = std::string("gcc ") + __VERSION__;
#else
  d["cxx"] = "unknown";
#endif
  d["cpu_isa"] = zk::isa_name(zk::cpu_isa());
  d["threads"] = zk::resolve_threads(0);
  d["mask_threshold"] = zk::mask_on_threshold();
  return d;
}

int cuda_device_count() {
#ifdef ZK_WITH_CUDA
  return zk::cuda::device_count();
#else
  return 0;
#endif
}

}  // namespace

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "Compiled ZegFormer post-processing kernels (see sdk.kernels for documentation).";
  zk::bind_device_array(m);
  m.def("masked_crops", &masked_crops, py::arg("image"), py::arg("mask_logits"), py::arg("crop_size") = 224,
        py::arg("sampling_ratio") = -1, py::arg("num_threads") = 0, py::arg("stream") = 0);
  m.def("mask_pool", &mask_pool, py::arg("features"), py::arg("mask_logits"), py::arg("mode") = "soft",
        py::arg("num_threads") = 0, py::arg("stream") = 0);
  m.def("semantic_inference", &semantic_inference, py::arg("mask_logits"), py::arg("class_probs"),
        py::arg("image_size"), py::arg("out_size"), py::arg("padded_size") = py::none(),
        py::arg("calibrate_mask") = py::none(), py::arg("calibrate") = 0.0, py::arg("return_scores") = false,
        py::arg("num_threads") = 0, py::arg("stream") = 0);
  m.def("build_info", &build_info);
  m.def("cuda_device_count", &cuda_device_count);
}
