// Attention kernels: the query-blocked path (and, with LibTorch >= 2, the fused one behind
// grouped_attention) against the explicit matmul/softmax path, values and gradients, with causal,
// padding and packed-segment masks and grouped kv heads.
#include <doctest/doctest.h>

#include <torch/torch.h>

#include "ming/model/attention.h"

using ming::model::blocked_attention;
using ming::model::explicit_attention;
using ming::model::grouped_attention;

namespace {

struct Inputs {
  torch::Tensor q, k, v, allowed, probe;
};

// B=2, T=S=37, H=4, Hkv=2, hd=8; causal, row 0 left-padded by 5 (its padding queries have no
// allowed key), row 1 packed as two segments [0, 20) and [20, 37).
Inputs make_inputs(torch::ScalarType dtype) {
  torch::manual_seed(11);
  const int64_t B = 2, T = 37, H = 4, Hkv = 2, hd = 8;
  auto opt = torch::TensorOptions().dtype(dtype);
  Inputs in;
  in.q = torch::randn({B, T, H, hd}, opt);
  in.k = torch::randn({B, Hkv, T, hd}, opt);
  in.v = torch::randn({B, Hkv, T, hd}, opt);
  in.probe = torch::randn({B, T, H * hd}, opt);
  auto pos = torch::arange(T);
  auto causal = pos.unsqueeze(0).le(pos.unsqueeze(1));  // (T, S)
  auto real = torch::ones({B, T}, torch::kBool);
  real[0].narrow(0, 0, 5).fill_(false);
  auto seg = torch::ones({B, T}, torch::kInt64);
  seg[1].narrow(0, 20, T - 20).fill_(2);
  auto same = seg.unsqueeze(2).eq(seg.unsqueeze(1));  // (B, T, S)
  in.allowed =
      causal.unsqueeze(0).logical_and(real.unsqueeze(1)).logical_and(same).view({B, 1, 1, T, T});
  return in;
}

struct Result {
  torch::Tensor out, dq, dk, dv;
};

template <class F>
Result run(F attention, const Inputs& in) {
  auto q = in.q.clone().requires_grad_(true), k = in.k.clone().requires_grad_(true),
       v = in.v.clone().requires_grad_(true);
  auto out = attention(q, k, v, in.allowed);
  (out * in.probe).sum().backward();
  return {out.detach(), q.grad(), k.grad(), v.grad()};
}

void check_close(const Result& got, const Result& want, double rtol, double atol) {
  CHECK(torch::allclose(got.out, want.out, rtol, atol));
  CHECK(torch::allclose(got.dq, want.dq, rtol, atol));
  CHECK(torch::allclose(got.dk, want.dk, rtol, atol));
  CHECK(torch::allclose(got.dv, want.dv, rtol, atol));
}

}  // namespace

TEST_CASE("attention: query blocks of any size give the explicit values and gradients") {
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    auto in = make_inputs(dtype);
    auto want = run(explicit_attention, in);
    const double rtol = dtype == torch::kFloat32 ? 1e-5 : 2e-2;
    const double atol = dtype == torch::kFloat32 ? 1e-5 : 2e-2;
    for (int64_t rows : {1, 5, 16, 37, 64}) {
      CAPTURE(rows);
      auto blocked = [rows](const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                            const torch::Tensor& a) { return blocked_attention(q, k, v, a, rows); };
      check_close(run(blocked, in), want, rtol, atol);
    }
  }
}

TEST_CASE("attention: a padding query with no allowed key averages the values, never NaN") {
  auto in = make_inputs(torch::kFloat32);
  auto out = blocked_attention(in.q, in.k, in.v, in.allowed, 4);
  CHECK(torch::isfinite(out).all().item<bool>());
  auto mean_v = in.v[0].mean(1);           // (Hkv, hd): uniform weights over all keys
  auto first = out[0][0].view({2, 2, 8});  // (Hkv, G, hd) of the first (padding) query
  CHECK(torch::allclose(first.select(1, 0), mean_v, 1e-5, 1e-5));
}

TEST_CASE("attention: the decoder's kernel (fused with LibTorch 2, blocked on 1.13) matches") {
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    auto in = make_inputs(dtype);
    const double tol = dtype == torch::kFloat32 ? 1e-5 : 2e-2;
    check_close(run(grouped_attention, in), run(explicit_attention, in), tol, tol);
    torch::NoGradGuard no_grad;
    CHECK(torch::allclose(grouped_attention(in.q, in.k, in.v, torch::Tensor()),
                          explicit_attention(in.q, in.k, in.v, torch::Tensor()), tol, tol));
  }
}
