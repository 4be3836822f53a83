// Scaled dot-product attention with grouped-query heads, three ways:
//   explicit_attention  matmul / fp32 softmax / matmul, as transformers' eager path; autograd keeps
//                       the (B, H, T, S) probabilities for backward.
//   blocked_attention   the same arithmetic over blocks of query rows (each block sees its full
//                       key rows, so the softmax is exact); its backward recomputes each block's
//                       probabilities, so nothing of size (B, H, T, S) is kept or ever allocated.
//   grouped_attention   what the decoder calls: at::scaled_dot_product_attention (fused kernels)
//                       with LibTorch >= 2, blocked_attention on 1.13, the explicit path for
//                       short queries without autograd (decode), where it is fastest.
// Shapes: q (B, T, H, hd); k, v (B, Hkv, S, hd) with H a multiple of Hkv (query head h reads kv
// head h / (H/Hkv), as HF's repeat_kv); allowed (B or 1, 1, 1, T, S) bool or undefined (all
// allowed). Scale 1/sqrt(hd). A query with no allowed key (a padding row) averages all values
// instead of producing NaN. Each returns (B, T, H*hd).
#pragma once

#include <cstdint>

#include <torch/torch.h>

namespace ming::model {

torch::Tensor explicit_attention(const torch::Tensor& q, const torch::Tensor& k,
                                 const torch::Tensor& v, const torch::Tensor& allowed);

// block_rows: query rows per block (0: as many as keep one block's fp32 scores near 64 MB).
torch::Tensor blocked_attention(const torch::Tensor& q, const torch::Tensor& k,
                                const torch::Tensor& v, const torch::Tensor& allowed,
                                int64_t block_rows = 0);

torch::Tensor grouped_attention(const torch::Tensor& q, const torch::Tensor& k,
                                const torch::Tensor& v, const torch::Tensor& allowed);

}  // namespace ming::model
