// CUDA runtime glue for the bindings: devices, pointers, memory, stream ordering.
#include <cuda_runtime.h>

#include <string>

#include "common.cuh"
#include "cuda_api.h"

namespace zk::cuda {
namespace {

std::string version_text(int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }

// Bounds of the allocation holding p, from the driver (no link-time dependency on it).
void allocation_range(const void* p, Pointer& out) {
#if CUDART_VERSION >= 12050
  using GetRange = int (*)(unsigned long long*, size_t*, unsigned long long);
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found;
  if (cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &fn, 12000, cudaEnableDefault, &found) != cudaSuccess ||
      found != cudaDriverEntryPointSuccess || fn == nullptr) {
    cudaGetLastError();
    return;
  }
  unsigned long long base = 0;
  size_t size = 0;
  if (reinterpret_cast<GetRange>(fn)(&base, &size, reinterpret_cast<unsigned long long>(p)) == 0) {
    out.range_known = true;
    out.base = static_cast<uintptr_t>(base);
    out.size = size;
  }
#else
  (void)p;
  (void)out;
#endif
}

}  // namespace

int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

std::string runtime_info() {
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  cudaGetLastError();
  std::string s = "runtime " + version_text(runtime);
  if (driver > 0) s += ", driver " + version_text(driver);
  return s;
}

Pointer inspect_pointer(const void* p) {
  cudaPointerAttributes attr{};
  const cudaError_t e = cudaPointerGetAttributes(&attr, p);
  if (e == cudaErrorInvalidValue) {  // not a pointer CUDA knows about
    cudaGetLastError();
    return Pointer{};
  }
  check(e, "cudaPointerGetAttributes");
  Pointer out;
  out.on_device = attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
  out.device = attr.device;
  if (out.on_device) {
    DeviceGuard guard(out.device);
    allocation_range(p, out);
  }
  return out;
}

DeviceGuard::DeviceGuard(int device) {
  check(cudaGetDevice(&previous_), "cudaGetDevice");
  if (previous_ != device) check(cudaSetDevice(device), "cudaSetDevice");
  else previous_ = -1;
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0) cudaSetDevice(previous_);
}

void* alloc(size_t bytes, int device) {
  DeviceGuard guard(device);
  void* p = nullptr;
  check(cudaMalloc(&p, bytes > 0 ? bytes : 1), "cudaMalloc");
  return p;
}

void release(void* p, int device) noexcept {
  if (p == nullptr) return;
  int previous = -1;
  if (cudaGetDevice(&previous) == cudaSuccess && previous != device) cudaSetDevice(device);
  cudaFree(p);  // errors ignored: at interpreter exit the runtime may be gone
  if (previous >= 0 && previous != device) cudaSetDevice(previous);
  cudaGetLastError();
}

void copy_to_host(void* dst, const void* src, size_t bytes, int device, intptr_t stream) {
  DeviceGuard guard(device);
  const cudaStream_t s = to_stream(stream);
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync");
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
}

void wait_on(intptr_t producer, intptr_t consumer) {
  const bool legacy_p = producer == 0 || producer == 1, legacy_c = consumer == 0 || consumer == 1;
  if (producer == consumer || (legacy_p && legacy_c)) return;
  cudaEvent_t event;
  check(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate");
  cudaError_t e = cudaEventRecord(event, to_stream(producer));
  if (e == cudaSuccess) e = cudaStreamWaitEvent(to_stream(consumer), event, 0);
  cudaEventDestroy(event);
  check(e, "waiting for the producer stream");
}

}  // namespace zk::cuda
