// What the bindings need from the CUDA side, in plain C++ (no CUDA headers), so that the
// same bindings build with or without CUDA (ZK_WITH_CUDA).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "zk/ops.h"

namespace zk::cuda {

// Number of usable devices; 0 when there is no driver or no device (never throws).
int device_count() noexcept;
// "runtime X.Y, driver X.Y" (the driver part is missing without a driver).
std::string runtime_info();

struct Pointer {
  bool on_device = false;  // device or managed memory
  int device = -1;
  bool range_known = false;  // allocation bounds from the driver, when it can tell
  uintptr_t base = 0;
  size_t size = 0;
};
Pointer inspect_pointer(const void* p);

// Makes `device` current for the lifetime of the guard.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

void* alloc(size_t bytes, int device);
void release(void* p, int device) noexcept;
void copy_to_host(void* dst, const void* src, size_t bytes, int device, intptr_t stream);
// Makes `consumer` wait for the work queued so far on `producer` (stream handles as in
// __cuda_array_interface__: 0 or 1 legacy default, 2 per-thread default).
void wait_on(intptr_t producer, intptr_t consumer);

// Launchers: asynchronous on `stream`; inputs/outputs are device pointers on the current device.
void masked_crops(const CropProblem& p, const float* image, const float* logits, float* crops, int32_t* boxes,
                  intptr_t stream);
void mask_pool(const PoolProblem& p, const float* features, const float* logits, float* pooled, intptr_t stream);
// cal_offsets: host array of K values (or null), copied to the device.
void semantic(const SemanticProblem& p, const float* logits, const float* probs, const float* cal_offsets,
              int32_t* labels, float* scores, intptr_t stream);

}  // namespace zk::cuda
