// masked_crops on the GPU: a box per query from a scan of its binary mask, then one
// thread per crop pixel doing torchvision's roi_align sampling on the masked image,
// with mask values evaluated from the low-resolution logits at each sample corner.
#include <climits>

#include "common.cuh"
#include "cuda_api.h"
#include "zk/resample.h"
#include "zk/roi.h"

namespace zk::cuda {
namespace {

constexpr int kBoxThreads = 256;
constexpr int kCropThreads = 256;

__device__ __forceinline__ bool mask_on(const CropProblem& p, const float* L, int64_t y, int64_t x) {
  return bilinear_at(L, p.w, linear_taps(y, p.h, p.H), linear_taps(x, p.w, p.W)) >= p.threshold;
}

// One block per query: extent of the binary mask, then the official box.
__global__ void boxes_kernel(CropProblem p, const float* __restrict__ logits, int32_t* __restrict__ boxes,
                             int32_t* __restrict__ nonempty) {
  const int64_t item = blockIdx.x;
  const float* L = logits + item * p.h * p.w;
  int ymin = INT_MAX, ymax = -1, xmin = INT_MAX, xmax = -1;
  for (int64_t x = threadIdx.x; x < p.W; x += blockDim.x) {
    const Taps tx = linear_taps(x, p.w, p.W);
    for (int64_t y = 0; y < p.H; ++y) {
      if (bilinear_at(L, p.w, linear_taps(y, p.h, p.H), tx) >= p.threshold) {
        ymin = min(ymin, static_cast<int>(y));
        ymax = max(ymax, static_cast<int>(y));
        xmin = min(xmin, static_cast<int>(x));
        xmax = max(xmax, static_cast<int>(x));
      }
    }
  }
  __shared__ int extent[4];
  if (threadIdx.x == 0) extent[0] = INT_MAX, extent[1] = -1, extent[2] = INT_MAX, extent[3] = -1;
  __syncthreads();
  if (ymax >= 0) {
    atomicMin(&extent[0], ymin);
    atomicMax(&extent[1], ymax);
    atomicMin(&extent[2], xmin);
    atomicMax(&extent[3], xmax);
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  int32_t* box = boxes + item * 4;
  const bool empty = extent[1] < 0;
  nonempty[item] = !empty;
  // Official quirks: inclusive maximum; zero area falls back to the exclusive (0, 0, W, H).
  if (empty || static_cast<int64_t>(extent[1] - extent[0]) * (extent[3] - extent[2]) == 0) {
    box[0] = 0, box[1] = 0, box[2] = static_cast<int32_t>(p.W), box[3] = static_cast<int32_t>(p.H);
  } else {
    box[0] = extent[2], box[1] = extent[0], box[2] = extent[3], box[3] = extent[1];
  }
}

// One crop pixel (all channels, four at a time) per thread, as torchvision computes it.
__global__ void crops_kernel(CropProblem p, const float* __restrict__ image, const float* __restrict__ logits,
                             const int32_t* __restrict__ boxes, const int32_t* __restrict__ nonempty,
                             float* __restrict__ crops) {
  const int64_t total = p.B * p.Q * p.S * p.S, plane_out = p.S * p.S, plane_in = p.H * p.W;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t pw = idx % p.S, ph = idx / p.S % p.S, item = idx / plane_out;
    float* out = crops + item * p.C * plane_out + ph * p.S + pw;
    if (!nonempty[item]) {
      for (int64_t c = 0; c < p.C; ++c) out[c * plane_out] = 0.f;
      continue;
    }
    const int32_t* box = boxes + item * 4;
    const RoiAxis ay = roi_axis(box[1], box[3], p.S, p.sampling_ratio);
    const RoiAxis ax = roi_axis(box[0], box[2], p.S, p.sampling_ratio);
    const float count = static_cast<float>(max(ay.grid * ax.grid, 1));
    const float* L = logits + item * p.h * p.w;
    const float* img = image + item / p.Q * p.C * plane_in;
    for (int64_t c0 = 0; c0 < p.C; c0 += 4) {
      const int nc = static_cast<int>(min(static_cast<int64_t>(4), p.C - c0));
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      for (int iy = 0; iy < ay.grid; ++iy) {
        const AxisSample sy = axis_sample(roi_coord(ay, ph, iy), p.H);
        for (int ix = 0; ix < ax.grid; ++ix) {
          const AxisSample sx = axis_sample(roi_coord(ax, pw, ix), p.W);
          if (!sy.valid || !sx.valid) continue;
          const float w1 = sy.wlo * sx.wlo, w2 = sy.wlo * sx.whi, w3 = sy.whi * sx.wlo, w4 = sy.whi * sx.whi;
          const bool m1 = mask_on(p, L, sy.lo, sx.lo), m2 = mask_on(p, L, sy.lo, sx.hi);
          const bool m3 = mask_on(p, L, sy.hi, sx.lo), m4 = mask_on(p, L, sy.hi, sx.hi);
          const int64_t o1 = sy.lo * p.W + sx.lo, o2 = sy.lo * p.W + sx.hi;
          const int64_t o3 = sy.hi * p.W + sx.lo, o4 = sy.hi * p.W + sx.hi;
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            if (k >= nc) break;
            const float* ch = img + (c0 + k) * plane_in;
            const float v1 = m1 ? ch[o1] : 0.f, v2 = m2 ? ch[o2] : 0.f;
            const float v3 = m3 ? ch[o3] : 0.f, v4 = m4 ? ch[o4] : 0.f;
            acc[k] += w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4;
          }
        }
      }
      for (int k = 0; k < nc; ++k) out[(c0 + k) * plane_out] = acc[k] / count;
    }
  }
}

}  // namespace

void masked_crops(const CropProblem& p, const float* image, const float* logits, float* crops, int32_t* boxes,
                  intptr_t stream) {
  const cudaStream_t s = to_stream(stream);
  StreamBuffer nonempty(p.B * p.Q * sizeof(int32_t), s);
  boxes_kernel<<<static_cast<unsigned>(p.B * p.Q), kBoxThreads, 0, s>>>(p, logits, boxes, nonempty.get<int32_t>());
  check_launch("masked_crops (boxes)");
  const int64_t total = p.B * p.Q * p.S * p.S;
  crops_kernel<<<grid_for(total, kCropThreads), kCropThreads, 0, s>>>(p, image, logits, boxes,
                                                                       nonempty.get<int32_t>(), crops);
  check_launch("masked_crops (crops)");
}

}  // namespace zk::cuda
