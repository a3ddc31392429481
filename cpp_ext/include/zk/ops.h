// The three kernels: problem descriptions and the CPU entry points.
// Callers validate shapes; every size here is >= 1 and every array C-contiguous float32.
#pragma once
#include <cstdint>

namespace zk {

// masked_crops: image [B,C,H,W], mask logits [B,Q,h,w] -> crops [B,Q,C,S,S], boxes [B,Q,4].
struct CropProblem {
  int64_t B, C, H, W;  // padded image
  int64_t Q, h, w;     // low-resolution mask logits
  int64_t S;           // crop size
  int sampling_ratio;  // roi_align sampling_ratio (<= 0: adaptive, the official -1)
  float threshold;     // mask_on_threshold()
  int threads;
};

// mask_pool: features [B,C,hf,wf], mask logits [B,Q,hm,wm] -> pooled [B,Q,C].
struct PoolProblem {
  int64_t B, C, hf, wf;
  int64_t Q, hm, wm;
  bool hard;  // weights sigmoid > 0.5 (true) or sigmoid (false)
  float threshold;
  int threads;
};

// semantic_inference: mask logits [B,Q,h,w], class probs [B,Q,K] -> labels [B,oh,ow]
// (+ scores [B,K,oh,ow]).
struct SemanticProblem {
  int64_t B, Q, h, w, K;
  int64_t H, W;    // padded size the masks are upsampled to
  int64_t ih, iw;  // unpadded image size (crop)
  int64_t oh, ow;  // output size
  int threads;
};

void masked_crops_cpu(const CropProblem& p, const float* image, const float* logits, float* crops,
                      int32_t* boxes);
void mask_pool_cpu(const PoolProblem& p, const float* features, const float* logits, float* pooled);
// cal_offsets: K values subtracted from the scores (0 for classes not calibrated), or null.
void semantic_cpu(const SemanticProblem& p, const float* logits, const float* probs, const float* cal_offsets,
                  int32_t* labels, float* scores);

}  // namespace zk
