// Plain LoRA adapter on a Projection: no-op at init, the formula, rsLoRA, dtypes, dropout.
#include <doctest/doctest.h>

#include <cmath>

#include <torch/torch.h>

#include "ming/adapt/lora.h"
#include "ming/core/error.h"
#include "ming/model/projection.h"
#include "support.h"

using ming::adapt::LoraAdapter;
using ming::adapt::LoraOptions;

namespace {
ming::model::Projection make_projection(int64_t in, int64_t out, torch::ScalarType dtype) {
  ming::model::Projection p("model.layers.0.self_attn.q_proj", in, out, /*bias=*/true,
                            torch::TensorOptions().dtype(dtype));
  torch::NoGradGuard g;
  p->weight.normal_(0, 0.2);
  p->bias.normal_(0, 0.2);
  return p;
}
}  // namespace

TEST_CASE("lora: a fresh adapter leaves the projection output unchanged") {
  torch::manual_seed(0);
  auto p = make_projection(12, 8, torch::kFloat32);
  auto x = torch::randn({2, 3, 12});
  auto before = p(x);
  p->set_adapter(std::make_shared<LoraAdapter>(12, 8, LoraOptions{4, 8.0, 0.0, false}));
  CHECK(torch::equal(p(x), before));
}

TEST_CASE("lora: initialisation is kaiming-uniform(a=sqrt(5)) A and zero B, fp32") {
  torch::manual_seed(1);
  LoraAdapter lora(400, 30, LoraOptions{16, 32.0, 0.05, false});
  CHECK((lora.lora_A.sizes() == torch::IntArrayRef({16, 400})));
  CHECK((lora.lora_B.sizes() == torch::IntArrayRef({30, 16})));
  CHECK((lora.lora_A.scalar_type() == torch::kFloat32));
  const double bound = 1.0 / std::sqrt(400.0);
  CHECK(lora.lora_A.abs().max().item<double>() <= bound);
  CHECK(lora.lora_A.abs().max().item<double>() > 0.9 * bound);  // uniform over the full range
  CHECK(lora.lora_A.std().item<double>() == doctest::Approx(bound / std::sqrt(3.0)).epsilon(0.05));
  CHECK(lora.lora_B.abs().max().item<double>() == 0.0);
}

TEST_CASE("lora: output is base + alpha/r * B A x, and alpha/sqrt(r) with rsLoRA") {
  torch::manual_seed(2);
  for (bool rs : {false, true}) {
    LoraAdapter lora(10, 6, LoraOptions{4, 8.0, 0.0, rs});
    {
      torch::NoGradGuard g;
      lora.lora_B.normal_();
    }
    const double s = rs ? 8.0 / 2.0 : 8.0 / 4.0;
    CHECK(lora.scaling() == s);
    auto x = torch::randn({5, 10}, torch::kFloat64);
    auto base = torch::randn({5, 6}, torch::kFloat64);
    auto a = lora.lora_A.to(torch::kFloat64), b = lora.lora_B.to(torch::kFloat64);
    auto want = base + s * torch::matmul(torch::matmul(x, a.t()), b.t());
    CHECK(torch::allclose(lora.forward(x, base).detach(), want, 1e-12, 1e-12));
    CHECK(torch::allclose(lora.delta_weight().to(torch::kFloat64), s * torch::matmul(b, a), 1e-6,
                          1e-6));
  }
}

TEST_CASE("lora: bf16 compute keeps bf16 activations and fp32 master gradients") {
  torch::manual_seed(3);
  auto p = make_projection(32, 16, torch::kBFloat16);
  auto lora = std::make_shared<LoraAdapter>(32, 16, LoraOptions{8, 16.0, 0.0, false});
  {
    torch::NoGradGuard g;
    lora->lora_B.normal_(0, 0.1);
  }
  p->set_adapter(lora);
  auto x = torch::randn({4, 32}, torch::kBFloat16).requires_grad_(true);
  auto y = p(x);
  CHECK((y.scalar_type() == torch::kBFloat16));
  y.sum().backward();
  REQUIRE(lora->lora_A.grad().defined());
  CHECK((lora->lora_A.grad().scalar_type() == torch::kFloat32));
  CHECK((lora->lora_B.grad().scalar_type() == torch::kFloat32));
  CHECK((x.grad().scalar_type() == torch::kBFloat16));
  CHECK_FALSE(p->weight.requires_grad());
  // The fp32 path gives the same result within bf16 rounding.
  auto y32 = lora->forward(
      x.detach().to(torch::kFloat32),
      torch::nn::functional::linear(x.detach().to(torch::kFloat32), p->weight.to(torch::kFloat32),
                                    p->bias.to(torch::kFloat32)));
  auto rel = (y.detach().to(torch::kFloat32) - y32).abs().max().item<double>() /
             y32.abs().max().item<double>();
  CHECK(rel < 0.03);
}

TEST_CASE("lora: gradients match autograd of the explicit formula") {
  torch::manual_seed(4);
  LoraAdapter lora(7, 5, LoraOptions{3, 6.0, 0.0, false});
  {
    torch::NoGradGuard g;
    lora.lora_B.normal_();
  }
  auto x = torch::randn({2, 4, 7}, torch::kFloat64).requires_grad_(true);
  auto base = torch::randn({2, 4, 5}, torch::kFloat64);
  auto probe = torch::randn({2, 4, 5}, torch::kFloat64);
  (lora.forward(x, base) * probe).sum().backward();
  auto a = lora.lora_A.detach().to(torch::kFloat64).requires_grad_(true);
  auto b = lora.lora_B.detach().to(torch::kFloat64).requires_grad_(true);
  auto x2 = x.detach().clone().requires_grad_(true);
  ((base + 2.0 * torch::matmul(torch::matmul(x2, a.t()), b.t())) * probe).sum().backward();
  CHECK(torch::allclose(x.grad(), x2.grad(), 1e-10, 1e-12));
  CHECK(torch::allclose(lora.lora_A.grad().to(torch::kFloat64), a.grad(), 1e-6, 1e-7));
  CHECK(torch::allclose(lora.lora_B.grad().to(torch::kFloat64), b.grad(), 1e-6, 1e-7));
}

TEST_CASE("lora: dropout acts in training only") {
  torch::manual_seed(5);
  LoraAdapter lora(64, 8, LoraOptions{4, 8.0, 0.5, false});
  {
    torch::NoGradGuard g;
    lora.lora_B.normal_();
  }
  auto x = torch::randn({16, 64});
  auto base = torch::zeros({16, 8});
  lora.eval();
  auto e1 = lora.forward(x, base), e2 = lora.forward(x, base);
  CHECK(torch::equal(e1, e2));
  lora.train();
  auto t1 = lora.forward(x, base);
  CHECK_FALSE(torch::allclose(t1, e1));
}

TEST_CASE("lora: invalid options are usage errors") {
  CHECK_THROWS_AS(LoraAdapter(4, 4, LoraOptions{0, 1.0, 0.0, false}), ming::UsageError);
  CHECK_THROWS_AS(LoraAdapter(4, 4, LoraOptions{2, 1.0, 1.0, false}), ming::UsageError);
}

TEST_CASE("lora: inference reuses bf16 copies of A and B until the fp32 masters change") {
  torch::manual_seed(4);
  LoraAdapter lora(6, 5, LoraOptions{2, 4.0, 0.0});
  {
    torch::NoGradGuard g;
    lora.lora_B.normal_(0, 0.5);
  }
  ming::adapt::ComputeCopy cache;
  torch::NoGradGuard no_grad;
  auto first = cache.get(lora.lora_A, torch::kBFloat16);
  CHECK((first.scalar_type() == torch::kBFloat16));
  CHECK(cache.get(lora.lora_A, torch::kBFloat16).data_ptr() == first.data_ptr());  // reused
  CHECK(cache.get(lora.lora_A, torch::kFloat32).data_ptr() == lora.lora_A.data_ptr());
  auto x = torch::randn({3, 6}).to(torch::kBFloat16);
  auto base = torch::zeros({3, 5}, torch::kBFloat16);
  auto y1 = lora.forward(x, base).to(torch::kFloat32);
  lora.lora_B.mul_(-1.0);  // an in-place update (optimiser step, weight load)
  auto y2 = lora.forward(x, base).to(torch::kFloat32);
  CHECK(torch::allclose(y2, -y1, 1e-2, 1e-2));
  lora.lora_A.add_(1.0);
  CHECK_FALSE(torch::equal(cache.get(lora.lora_A, torch::kBFloat16).to(torch::kFloat32),
                           first.to(torch::kFloat32)));
}
