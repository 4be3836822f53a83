#include "ming/model/attention.h"

#include <torch/version.h>

#include <cmath>
#include <limits>

namespace ming::model {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

namespace {

// About 64 MB of fp32 scores per block: large enough for efficient GEMMs, small next to the
// activations recomputation keeps.
constexpr int64_t kBlockScoreElements = int64_t(1) << 24;

double inverse_sqrt(int64_t hd) {
  return 1.0 / std::sqrt(static_cast<double>(hd));
}

// (B, T, H, hd) -> (B, Hkv, G, T, hd): the query heads sharing a kv head side by side, so K and V
// are used in place instead of being repeated G times.
Tensor grouped_queries(const Tensor& q, int64_t kv_heads) {
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), hd = q.size(3);
  return q.reshape({B, T, kv_heads, H / kv_heads, hd}).permute({0, 2, 3, 1, 4});
}

// (B, Hkv, G, T, hd) -> (B, T, H*hd)
Tensor ungrouped(const Tensor& x) {
  return x.permute({0, 3, 1, 2, 4}).reshape({x.size(0), x.size(3), -1});
}

// The keys a block of query rows [t0, t0 + n) needs: up to the last allowed one when every row
// has one (causal blocks stop at their diagonal); all of them when some row has none, which
// then averages every value as in the explicit path.
struct BlockKeys {
  int64_t keys;
  Tensor allowed;  // (B|1, 1, 1, n, keys) or undefined
};

BlockKeys block_keys(const Tensor& allowed, int64_t t0, int64_t n, int64_t S) {
  if (!allowed.defined()) return {S, Tensor()};
  auto rows = allowed.narrow(3, t0, n);
  int64_t keys = S;
  if (rows.any(4).all().item<bool>()) {
    auto columns = rows.reshape({-1, S}).any(0);  // (S)
    keys = columns.nonzero().max().item<int64_t>() + 1;
  }
  return {keys, rows.narrow(4, 0, keys)};
}

// fp32 softmax of one block's scores: qb (B, Hkv, G*n, hd), kb (B, Hkv, keys, hd) ->
// (B, Hkv, G, n, keys). The same operations as explicit_attention, row for row.
Tensor block_probabilities(const Tensor& qb, const Tensor& kb, const Tensor& allowed, int64_t G) {
  const int64_t B = qb.size(0), Hkv = qb.size(1), n = qb.size(2) / G, keys = kb.size(2);
  auto s32 = torch::matmul(qb, kb.transpose(-1, -2))
                 .to(torch::kFloat32)
                 .mul_(inverse_sqrt(qb.size(3)))
                 .view({B, Hkv, G, n, keys});
  if (allowed.defined())
    s32.masked_fill_(allowed.logical_not(), std::numeric_limits<float>::lowest());
  return torch::softmax(s32, -1);
}

int64_t block_rows_for(const Tensor& q, const Tensor& k, int64_t requested) {
  if (requested > 0) return requested;
  const int64_t per_row = q.size(0) * q.size(2) * k.size(2);
  return std::max<int64_t>(16, kBlockScoreElements / std::max<int64_t>(1, per_row));
}

Tensor blocked_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& allowed,
                       int64_t rows) {
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), hd = q.size(3);
  const int64_t Hkv = k.size(1), S = k.size(2), G = H / Hkv;
  auto q5 = grouped_queries(q, Hkv);                          // (B, Hkv, G, T, hd)
  auto out5 = torch::empty({B, Hkv, G, T, hd}, q.options());  // (B, Hkv, G, T, hd)
  for (int64_t t0 = 0; t0 < T; t0 += rows) {
    const int64_t n = std::min(rows, T - t0);
    auto [keys, mask] = block_keys(allowed, t0, n, S);
    auto qb = q5.narrow(3, t0, n).reshape({B, Hkv, G * n, hd});
    auto probs = block_probabilities(qb, k.narrow(2, 0, keys), mask, G);
    auto ob = torch::matmul(probs.to(q.scalar_type()).view({B, Hkv, G * n, keys}),
                            v.narrow(2, 0, keys));  // (B, Hkv, G*n, hd)
    out5.narrow(3, t0, n).copy_(ob.view({B, Hkv, G, n, hd}));
  }
  return ungrouped(out5);
}

struct BlockedAttention : public torch::autograd::Function<BlockedAttention> {
  static Tensor forward(AutogradContext* ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& allowed, int64_t rows) {
    ctx->save_for_backward({q, k, v, allowed});
    ctx->saved_data["rows"] = rows;
    return blocked_forward(q, k, v, allowed, rows);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor &q = saved[0], &k = saved[1], &v = saved[2], &allowed = saved[3];
    const int64_t rows = ctx->saved_data["rows"].toInt();
    const int64_t B = q.size(0), T = q.size(1), H = q.size(2), hd = q.size(3);
    const int64_t Hkv = k.size(1), S = k.size(2), G = H / Hkv;
    const auto dtype = q.scalar_type();
    const double scale = inverse_sqrt(hd);

    auto q5 = grouped_queries(q, Hkv);
    auto g5 = grads[0].reshape({B, T, Hkv, G, hd}).permute({0, 2, 3, 1, 4});  // (B, Hkv, G, T, hd)
    auto dq5 = torch::empty({B, Hkv, G, T, hd}, q.options());
    // Key/value gradients sum over blocks: accumulate in fp32, round once.
    auto f32 = q.options().dtype(torch::kFloat32);
    auto dk = torch::zeros({B, Hkv, S, hd}, f32), dv = torch::zeros({B, Hkv, S, hd}, f32);
    for (int64_t t0 = 0; t0 < T; t0 += rows) {
      const int64_t n = std::min(rows, T - t0);
      auto [keys, mask] = block_keys(allowed, t0, n, S);
      auto qb = q5.narrow(3, t0, n).reshape({B, Hkv, G * n, hd});
      auto kb = k.narrow(2, 0, keys), vb = v.narrow(2, 0, keys);
      auto p32 = block_probabilities(qb, kb, mask, G);  // (B, Hkv, G, n, keys)
      auto p = p32.to(dtype).view({B, Hkv, G * n, keys});
      auto gb = g5.narrow(3, t0, n).reshape({B, Hkv, G * n, hd});
      dv.narrow(2, 0, keys).add_(torch::matmul(p.transpose(-1, -2), gb));
      auto dp32 = torch::matmul(gb, vb.transpose(-1, -2)).to(torch::kFloat32).view(p32.sizes());
      // Softmax backward as autograd computes it, then the masked scores' gradient is zero.
      auto ds32 = p32 * (dp32 - (dp32 * p32).sum(-1, /*keepdim=*/true));
      if (mask.defined()) ds32.masked_fill_(mask.logical_not(), 0.0);
      auto ds = ds32.mul_(scale).to(dtype).view({B, Hkv, G * n, keys});
      dq5.narrow(3, t0, n).copy_(torch::matmul(ds, kb).view({B, Hkv, G, n, hd}));
      dk.narrow(2, 0, keys).add_(torch::matmul(ds.transpose(-1, -2), qb));
    }
    auto dq = dq5.permute({0, 3, 1, 2, 4}).reshape({B, T, H, hd});
    return {dq, dk.to(dtype), dv.to(dtype), Tensor(), Tensor()};
  }
};

bool needs_grad(const Tensor& q, const Tensor& k, const Tensor& v) {
  return torch::GradMode::is_enabled() &&
         (q.requires_grad() || k.requires_grad() || v.requires_grad());
}

#if TORCH_VERSION_MAJOR >= 2
// at::scaled_dot_product_attention picks a fused kernel (flash / memory-efficient on CUDA, the
// flash kernel on CPU) that keeps only per-row statistics for backward. Only its 2.0 arguments
// are used (scale and enable_gqa came later): kv heads are repeated for it, and the mask is
// additive with the dtype's lowest finite value so that a row without allowed keys averages all
// values as in the explicit path (a boolean mask would make it NaN).
Tensor fused_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& allowed) {
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), hd = q.size(3);
  const int64_t Hkv = k.size(1), S = k.size(2), G = H / Hkv;
  auto repeat_kv = [&](const Tensor& t) {
    return G == 1 ? t : t.unsqueeze(2).expand({B, Hkv, G, S, hd}).reshape({B, H, S, hd});
  };
  c10::optional<Tensor> mask;
  if (allowed.defined()) {
    double lowest = std::numeric_limits<float>::lowest();
    if (q.scalar_type() == torch::kBFloat16) lowest = std::numeric_limits<c10::BFloat16>::lowest();
    if (q.scalar_type() == torch::kHalf) lowest = std::numeric_limits<c10::Half>::lowest();
    mask = torch::zeros(allowed.sizes(), q.options())
               .masked_fill_(allowed.logical_not(), lowest)
               .squeeze(2);  // (B|1, 1, T, S)
  }
  auto out = at::scaled_dot_product_attention(q.transpose(1, 2), repeat_kv(k), repeat_kv(v), mask,
                                              /*dropout_p=*/0.0, /*is_causal=*/false);
  return out.transpose(1, 2).reshape({B, T, H * hd});
}
#endif

}  // namespace

Tensor explicit_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& allowed) {
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), hd = q.size(3);
  const int64_t Hkv = k.size(1), S = k.size(2), G = H / Hkv;
  TORCH_INTERNAL_ASSERT(H % Hkv == 0 && k.size(3) == hd);
  auto qg = grouped_queries(q, Hkv).reshape({B, Hkv, G * T, hd});
  auto scores = torch::matmul(qg, k.transpose(-1, -2));  // (B, Hkv, G*T, S)
  // Softmax in fp32 (HF eager does the same); a fully masked row (a padding query) becomes
  // uniform instead of NaN because the fill value is finite.
  auto s32 = scores.to(torch::kFloat32).mul_(inverse_sqrt(hd));
  s32 = s32.view({B, Hkv, G, T, S});
  if (allowed.defined())
    s32 = s32.masked_fill(allowed.logical_not(), std::numeric_limits<float>::lowest());
  auto probs = torch::softmax(s32, -1).to(q.scalar_type()).view({B, Hkv, G * T, S});
  auto out = torch::matmul(probs, v);  // (B, Hkv, G*T, hd)
  return ungrouped(out.view({B, Hkv, G, T, hd}));
}

Tensor blocked_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& allowed,
                         int64_t block_rows) {
  TORCH_INTERNAL_ASSERT(q.size(2) % k.size(1) == 0 && k.size(3) == q.size(3));
  const int64_t rows = block_rows_for(q, k, block_rows);
  if (!needs_grad(q, k, v)) return blocked_forward(q, k, v, allowed, rows);
  return BlockedAttention::apply(q, k, v, allowed, rows);
}

Tensor grouped_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& allowed) {
  const bool small = q.size(0) * q.size(2) * q.size(1) * k.size(2) <= kBlockScoreElements;
  if (small && !needs_grad(q, k, v)) return explicit_attention(q, k, v, allowed);
#if TORCH_VERSION_MAJOR >= 2
  return fused_attention(q, k, v, allowed);
#else
  return blocked_attention(q, k, v, allowed);
#endif
}

}  // namespace ming::model
