// The low-rank update of a few tokens without autograd (decode, batched generation), as one
// kernel per layer instead of several small matmuls: on CPU each small bf16 matmul costs
// 40-60 us of oneDNN set-up whatever its size, which made adapters as slow as the frozen base
// projection in decode. Used by LoraAdapter (one expert, fixed gate) and MoloraAdapter.
#pragma once

#include <initializer_list>

#include <ATen/ATen.h>

namespace ming::adapt::detail {

// Tokens up to which the kernel beats the matmul paths (Qwen2-0.5B gate_proj, bf16, 2 threads:
// 16 tokens in 0.43 ms against 0.63 ms through matmuls; the gap closes towards 32).
constexpr int64_t kFewTokens = 16;

// True when autograd is recording and one of `tensors` (undefined ones are skipped) needs a
// gradient: the adapters' inference-only paths apply when this is false.
bool needs_autograd(std::initializer_list<at::Tensor> tensors);

// True when low_rank_update can run on x (N, D): CPU, fp32/fp64/bf16/fp16, N <= kFewTokens.
bool low_rank_kernel_applies(const at::Tensor& x);

// out (N, O) = base + sum_s gates[t, s] * (A_e x_t) @ Bt_e, e = experts[t, s].
//   x (N, D), base (N, O), a (E, r, D), bt (E, r, O): one dtype, contiguous;
//   experts (N, k) int64 (undefined: expert 0 for every token, k = 1); gates (N, k) any float
//   dtype (undefined with undefined experts: `scale` for every token).
// Accumulates in fp32 (fp64 for fp64) and rounds once.
at::Tensor low_rank_update(const at::Tensor& x, const at::Tensor& experts, const at::Tensor& gates,
                           const at::Tensor& a, const at::Tensor& bt, const at::Tensor& base,
                           double scale = 1.0);

}  // namespace ming::adapt::detail
