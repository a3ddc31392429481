// Shared CUDA helpers: error checks, stream handles, stream-ordered scratch memory.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace zk::cuda {

// Throws std::runtime_error naming `what` unless e is cudaSuccess.
inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear a non-sticky error so later calls start clean
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
  }
}

inline void check_launch(const char* what) { check(cudaGetLastError(), what); }

// Stream handles as in __cuda_array_interface__: 1 legacy default, 2 per-thread default.
inline cudaStream_t to_stream(intptr_t handle) {
  if (handle == 1) return cudaStreamLegacy;
  if (handle == 2) return cudaStreamPerThread;
  return reinterpret_cast<cudaStream_t>(handle);
}

// Scratch memory allocated and freed in stream order (plain cudaMalloc where the device
// has no stream-ordered allocator).
class StreamBuffer {
 public:
  StreamBuffer(size_t bytes, cudaStream_t stream) : stream_(stream) {
    const size_t n = bytes > 0 ? bytes : 1;
    cudaError_t e = cudaMallocAsync(&ptr_, n, stream);
    if (e == cudaErrorNotSupported) {
      cudaGetLastError();
      ordered_ = false;
      e = cudaMalloc(&ptr_, n);
    }
    check(e, "allocating CUDA scratch memory");
  }
  ~StreamBuffer() {
    if (ordered_) {
      cudaFreeAsync(ptr_, stream_);
    } else {
      cudaStreamSynchronize(stream_);
      cudaFree(ptr_);
    }
  }
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;
  template <class T>
  T* get() const { return static_cast<T*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
  bool ordered_ = true;
};

// Blocks for a grid-stride loop over n items.
inline unsigned grid_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < (1 << 20) ? (blocks > 0 ? blocks : 1) : (1 << 20));
}

}  // namespace zk::cuda
