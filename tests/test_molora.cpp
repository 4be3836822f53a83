// MoLoRA: sparse dispatch against a naive dense reference, routing rules, losses, masks, traces.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <torch/torch.h>

#include "ming/adapt/adapter_io.h"
#include "ming/adapt/molora.h"
#include "ming/core/error.h"
#include "ming/train/options.h"
#include "support.h"

using ming::adapt::BalanceLoss;
using ming::adapt::DispatchA;
using ming::adapt::MoeContext;
using ming::adapt::MoloraAdapter;
using ming::adapt::MoloraOptions;

namespace {

// Makes every parameter non-trivial (B starts at zero, which would hide most bugs).
void randomise(MoloraAdapter& m) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters()) p.copy_(torch::randn_like(p) * 0.5);
}

// Naive reference written independently of the library: every expert on every token, routed by
// a dense (N, E) weight matrix that is zero outside each token's top-k.
torch::Tensor dense_reference(const torch::Tensor& x, const torch::Tensor& base,
                              const torch::Tensor& a, const torch::Tensor& b,
                              const torch::Tensor& wr, const torch::Tensor& br, int64_t k,
                              double scaling) {
  auto x2 = x.reshape({-1, x.size(-1)});
  auto logits = torch::matmul(x2, wr.t());
  if (br.defined()) logits = logits + br;
  auto top = logits.topk(k, -1);
  auto gates = torch::softmax(std::get<0>(top), -1);
  auto weight = torch::zeros_like(logits).scatter(1, std::get<1>(top), gates);  // (N, E)
  auto out = base.reshape({-1, base.size(-1)});
  for (int64_t e = 0; e < a.size(0); ++e) {
    auto delta = torch::matmul(torch::matmul(x2, a[e].t()), b[e].t()) * scaling;  // (N, O)
    out = out + weight.select(1, e).unsqueeze(1) * delta;
  }
  return out.view(base.sizes());
}

struct Grads {
  torch::Tensor y, x, a, b, wr, br;
};

Grads run_adapter(MoloraAdapter& m, const torch::Tensor& x0, const torch::Tensor& base,
                  const torch::Tensor& probe) {
  for (auto& p : m.parameters()) p.mutable_grad() = torch::Tensor();
  auto x = x0.clone().requires_grad_(true);
  auto y = m.forward(x, base);
  (y * probe).sum().backward();
  return {y.detach(),
          x.grad(),
          m.lora_A.grad(),
          m.lora_B.grad(),
          m.router_weight.grad(),
          m.router_bias.defined() ? m.router_bias.grad() : torch::Tensor()};
}

Grads run_reference(MoloraAdapter& m, const torch::Tensor& x0, const torch::Tensor& base,
                    const torch::Tensor& probe) {
  auto dt = x0.scalar_type();
  auto x = x0.clone().requires_grad_(true);
  auto a = m.lora_A.detach().to(dt).requires_grad_(true);
  auto b = m.lora_B.detach().to(dt).requires_grad_(true);
  auto wr = m.router_weight.detach().to(dt).requires_grad_(true);
  torch::Tensor br;
  if (m.router_bias.defined()) br = m.router_bias.detach().to(dt).requires_grad_(true);
  auto y = dense_reference(x, base, a, b, wr, br, m.options().top_k, m.scaling());
  (y * probe).sum().backward();
  return {y.detach(), x.grad(),  a.grad(),
          b.grad(),   wr.grad(), br.defined() ? br.grad() : torch::Tensor()};
}

void check_close(const torch::Tensor& got, const torch::Tensor& want, const char* what,
                 double tol = 1e-6) {
  INFO(what);
  REQUIRE(got.defined());
  REQUIRE(got.sizes() == want.sizes());
  auto err = (got.to(torch::kFloat64) - want.to(torch::kFloat64)).abs().max().item<double>();
  auto scale = want.to(torch::kFloat64).abs().max().item<double>() + 1e-12;
  CHECK(err <= tol * std::max(1.0, scale));
}

}  // namespace

TEST_CASE("molora: a fresh adapter leaves the base output unchanged") {
  torch::manual_seed(0);
  MoloraAdapter m(16, 12, MoloraOptions{});
  auto x = torch::randn({2, 5, 16});
  auto base = torch::randn({2, 5, 12});
  CHECK(torch::equal(m.forward(x, base), base));
  m.eval();
  CHECK(torch::equal(m.forward(x, base), base));
}

TEST_CASE("molora: defaults are MING-MOE's MLP layer") {
  MoloraOptions o;
  CHECK(o.experts == 8);
  CHECK(o.top_k == 2);
  CHECK(o.r == 16);
  CHECK(o.alpha == 32.0);
  CHECK(o.router_bias);
  CHECK(o.balance_loss == BalanceLoss::none);
  CHECK(o.router_z_loss_coef == 0.0);
  CHECK_FALSE(o.shared_expert);
  CHECK(o.jitter == 0.0);
  MoloraAdapter m(64, 32, o);
  CHECK(m.scaling() == 2.0);
  CHECK((m.lora_A.sizes() == torch::IntArrayRef({8, 16, 64})));
  CHECK((m.lora_B.sizes() == torch::IntArrayRef({8, 32, 16})));
  CHECK((m.router_weight.sizes() == torch::IntArrayRef({8, 64})));
  CHECK((m.router_bias.sizes() == torch::IntArrayRef({8})));
  CHECK(m.lora_A.abs().max().item<double>() <= 1.0 / std::sqrt(64.0));
  CHECK(m.lora_B.abs().max().item<double>() == 0.0);
  CHECK((m.lora_A.scalar_type() == torch::kFloat32));
}

TEST_CASE("molora: sparse dispatch matches a dense reference in values and gradients (fp64)") {
  for (auto mode : {DispatchA::dense, DispatchA::gathered}) {
    for (bool bias : {true, false}) {
      CAPTURE(int(mode));
      CAPTURE(bias);
      torch::manual_seed(1);
      MoloraOptions o;
      o.experts = 5, o.top_k = 2, o.r = 3, o.alpha = 6, o.router_bias = bias;
      MoloraAdapter m(12, 10, o);
      m.set_dispatch_a(mode);
      randomise(m);
      auto opt = torch::TensorOptions().dtype(torch::kFloat64);
      auto x = torch::randn({3, 7, 12}, opt);
      auto base = torch::randn({3, 7, 10}, opt);
      auto probe = torch::randn({3, 7, 10}, opt);
      auto got = run_adapter(m, x, base, probe);
      auto want = run_reference(m, x, base, probe);
      check_close(got.y, want.y, "output");
      check_close(got.x, want.x, "grad x");
      check_close(got.a, want.a, "grad A");
      check_close(got.b, want.b, "grad B");
      check_close(got.wr, want.wr, "grad router weight");
      if (bias) check_close(got.br, want.br, "grad router bias");
      // Routing must actually spread tokens over several experts for this to mean anything.
      auto routes = m.route(x).first;
      CHECK(std::get<0>(at::_unique(routes.flatten())).numel() >= 3);
    }
  }
}

TEST_CASE("molora: sparse dispatch matches the dense reference in fp32 with a single token") {
  torch::manual_seed(2);
  MoloraOptions o;
  o.experts = 8, o.top_k = 2, o.r = 4;
  MoloraAdapter m(20, 9, o);
  randomise(m);
  auto x = torch::randn({1, 1, 20});
  auto base = torch::randn({1, 1, 9});
  auto probe = torch::randn({1, 1, 9});
  auto got = run_adapter(m, x, base, probe);
  auto want = run_reference(m, x, base, probe);
  check_close(got.y, want.y, "output", 1e-5);
  check_close(got.x, want.x, "grad x", 1e-5);
  check_close(got.wr, want.wr, "grad router weight", 1e-5);
}

TEST_CASE("molora: top-k softmax equals MING's softmax-over-all then renormalise, with gradients") {
  torch::manual_seed(3);
  auto logits = torch::randn({6, 8}, torch::kFloat64).requires_grad_(true);
  auto probe = torch::randn({6, 2}, torch::kFloat64);
  auto top = logits.topk(2, -1);
  auto ours = torch::softmax(std::get<0>(top), -1);
  auto g1 = torch::autograd::grad({(ours * probe).sum()}, {logits})[0];
  auto probs = logits.softmax(-1);
  auto ptop = std::get<0>(probs.topk(2, -1));
  auto ming = ptop / ptop.sum(-1, true);
  auto g2 = torch::autograd::grad({(ming * probe).sum()}, {logits})[0];
  CHECK(torch::allclose(ours, ming, 1e-12, 1e-12));
  CHECK(torch::allclose(g1, g2, 1e-10, 1e-12));
}

TEST_CASE("molora: k == E mixes all experts softly") {
  torch::manual_seed(4);
  MoloraOptions o;
  o.experts = 3, o.top_k = 3, o.r = 2, o.alpha = 2;
  MoloraAdapter m(6, 5, o);
  randomise(m);
  auto x = torch::randn({4, 6}, torch::kFloat64);
  auto base = torch::zeros({4, 5}, torch::kFloat64);
  auto y = m.forward(x, base);
  // Softmax over all logits, every expert weighted.
  auto wr = m.router_weight.to(torch::kFloat64), br = m.router_bias.to(torch::kFloat64);
  auto w = torch::softmax(torch::matmul(x, wr.t()) + br, -1);  // (N, E)
  auto want = torch::zeros({4, 5}, torch::kFloat64);
  for (int64_t e = 0; e < 3; ++e) {
    auto a = m.lora_A[e].detach().to(torch::kFloat64), b = m.lora_B[e].detach().to(torch::kFloat64);
    want += w.select(1, e).unsqueeze(1) * torch::matmul(torch::matmul(x, a.t()), b.t());
  }
  CHECK(torch::allclose(y.detach(), want, 1e-10, 1e-12));
}

TEST_CASE("molora: the shared expert is always on with weight 1") {
  torch::manual_seed(5);
  MoloraOptions o;
  o.experts = 4, o.top_k = 1, o.r = 2, o.alpha = 4, o.shared_expert = true;
  MoloraAdapter with(6, 5, o);
  randomise(with);
  o.shared_expert = false;
  MoloraAdapter without(6, 5, o);
  {
    torch::NoGradGuard g;
    without.lora_A.copy_(with.lora_A), without.lora_B.copy_(with.lora_B);
    without.router_weight.copy_(with.router_weight), without.router_bias.copy_(with.router_bias);
  }
  auto x = torch::randn({7, 6}, torch::kFloat64);
  auto base = torch::randn({7, 5}, torch::kFloat64);
  auto sa = with.shared_A.to(torch::kFloat64), sb = with.shared_B.to(torch::kFloat64);
  auto shared = torch::matmul(torch::matmul(x, sa.t()), sb.t()) * with.scaling();
  CHECK(torch::allclose(with.forward(x, base).detach(), without.forward(x, base).detach() + shared,
                        1e-10, 1e-12));
  CHECK((with.shared_A.sizes() == torch::IntArrayRef({2, 6})));
}

namespace {
// An adapter whose router picks a fixed, known pattern: router weight = identity-like on the
// first E input features, no bias, so logits = x[:, :E].
MoloraAdapter make_identity_router(int64_t e, int64_t k, BalanceLoss loss, double coef, double z) {
  MoloraOptions o;
  o.experts = e, o.top_k = k, o.r = 2, o.router_bias = false, o.balance_loss = loss,
  o.balance_loss_coef = coef, o.router_z_loss_coef = z;
  MoloraAdapter m(e, 3, o);
  torch::NoGradGuard g;
  m.router_weight.copy_(torch::eye(e));
  return m;
}

// Hand computation with plain loops over tokens.
double hand_balance(const std::vector<std::vector<double>>& logits, const std::vector<bool>& valid,
                    int64_t k, bool switch_style) {
  const size_t n_e = logits[0].size();
  std::vector<double> p(n_e, 0), cnt(n_e, 0);
  double n = 0;
  for (size_t t = 0; t < logits.size(); ++t) {
    if (!valid[t]) continue;
    n += 1;
    double z = 0;
    for (double l : logits[t]) z += std::exp(l);
    for (size_t e = 0; e < n_e; ++e) p[e] += std::exp(logits[t][e]) / z;
    std::vector<size_t> idx(n_e);
    for (size_t e = 0; e < n_e; ++e) idx[e] = e;
    std::sort(idx.begin(), idx.end(),
              [&](size_t a, size_t b) { return logits[t][a] > logits[t][b]; });
    for (int64_t s = 0; s < k; ++s) cnt[idx[s]] += 1;
  }
  double loss = 0;
  for (size_t e = 0; e < n_e; ++e) loss += (cnt[e] / (n * (switch_style ? k : 1))) * (p[e] / n);
  return loss * double(n_e);
}
}  // namespace

TEST_CASE("molora: balance and z losses match a hand computation, padding excluded") {
  std::vector<std::vector<double>> logits = {{2.0, 1.0, 0.0, -1.0},
                                             {0.5, 3.0, 0.1, 0.0},
                                             {0.0, 0.2, 0.3, 2.5},
                                             {1.0, 0.9, 0.8, 0.7},
                                             {-3.0, 4.0, 1.0, 0.0}};
  auto x = torch::tensor(std::vector<double>{2.0, 1.0, 0.0, -1.0, 0.5, 3.0, 0.1,  0.0, 0.0, 0.2,
                                             0.3, 2.5, 1.0, 0.9,  0.8, 0.7, -3.0, 4.0, 1.0, 0.0},
                         torch::kFloat64)
               .view({1, 5, 4});
  auto base = torch::zeros({1, 5, 3}, torch::kFloat64);
  for (auto style : {BalanceLoss::switch_style, BalanceLoss::mixtral}) {
    for (bool masked : {false, true}) {
      CAPTURE(int(style));
      CAPTURE(masked);
      auto m = make_identity_router(4, 2, style, 0.5, 0.1);
      auto ctx = m.context();
      std::vector<bool> valid = {true, true, true, !masked, !masked};
      if (masked) ctx->set_token_mask(torch::tensor({1, 1, 1, 0, 0}).view({1, 5}));
      m.train();
      m.forward(x, base);
      auto aux = ctx->take_aux_loss();
      double balance = hand_balance(logits, valid, 2, style == BalanceLoss::switch_style);
      double z = 0, n = 0;
      for (size_t t = 0; t < logits.size(); ++t) {
        if (!valid[t]) continue;
        double s = 0;
        for (double l : logits[t]) s += std::exp(l);
        z += std::log(s) * std::log(s), n += 1;
      }
      z /= n;
      CHECK(ctx->last_balance_loss() == doctest::Approx(balance).epsilon(1e-12));
      CHECK(ctx->last_z_loss() == doctest::Approx(z).epsilon(1e-12));
      CHECK(aux.item<double>() == doctest::Approx(0.5 * balance + 0.1 * z).epsilon(1e-12));
      // A uniform router gives the documented minimum: 1 (switch) or k (mixtral).
      // Load statistics count only real tokens.
      auto load = ctx->take_load();
      REQUIRE(load.size() == 1);
      CHECK(load.begin()->second.tokens == (masked ? 3 : 5));
      int64_t total = 0;
      for (auto c : load.begin()->second.counts) total += c;
      CHECK(total == 2 * (masked ? 3 : 5));
      ctx->clear_token_mask();
    }
  }
}

TEST_CASE("molora: balance loss of a uniform router is 1 (switch) or k (mixtral)") {
  for (auto style : {BalanceLoss::switch_style, BalanceLoss::mixtral}) {
    auto m = make_identity_router(4, 2, style, 1.0, 0.0);
    {
      torch::NoGradGuard g;
      m.router_weight.zero_();
    }
    m.train();
    // Equal logits: P_e = 1/4 whichever 2 experts topk picks on ties.
    auto x = torch::zeros({8, 4});
    m.forward(x, torch::zeros({8, 3}));
    auto ctx = m.context();
    auto aux = ctx->take_aux_loss().item<double>();
    // P_e = 1/4 for all e; sum_e f_e = 1 (switch) or k (mixtral).
    CHECK(aux == doctest::Approx(style == BalanceLoss::switch_style ? 1.0 : 2.0));
  }
}

TEST_CASE("molora: no auxiliary loss in eval mode or when disabled") {
  auto m = make_identity_router(4, 2, BalanceLoss::switch_style, 1.0, 1.0);
  m.eval();
  m.forward(torch::randn({5, 4}), torch::zeros({5, 3}));
  CHECK(m.context()->take_aux_loss().item<double>() == 0.0);
  CHECK(m.context()->take_load().empty());
  auto plain = make_identity_router(4, 2, BalanceLoss::none, 1.0, 0.0);
  plain.train();
  plain.forward(torch::randn({5, 4}), torch::zeros({5, 3}));
  CHECK(plain.context()->take_aux_loss().item<double>() == 0.0);
  CHECK(plain.context()->take_load().size() == 1);  // load is logged in training regardless
}

TEST_CASE("molora: a token mask of the wrong size is an error naming the layer") {
  auto m = make_identity_router(4, 2, BalanceLoss::switch_style, 1.0, 0.0);
  m.set_name("model.layers.0.mlp.up_proj");
  m.context()->set_token_mask(torch::ones({2, 3}));
  CHECK_THROWS_WITH_AS(m.forward(torch::randn({2, 4, 4}), torch::zeros({2, 4, 3})),
                       doctest::Contains("model.layers.0.mlp.up_proj"), ming::Error);
}

TEST_CASE("molora: the route recorder sees each token's experts and gates; off by default") {
  torch::manual_seed(6);
  MoloraOptions o;
  o.experts = 4, o.top_k = 2, o.r = 2;
  MoloraAdapter m(6, 5, o);
  m.set_name("model.layers.1.mlp.down_proj");
  m.eval();
  CHECK(m.context()->recorder() == nullptr);
  auto trace = std::make_shared<ming::adapt::RouteTrace>();
  m.context()->set_recorder(trace);
  auto x = torch::randn({2, 3, 6});
  m.forward(x, torch::zeros({2, 3, 5}));
  REQUIRE(trace->entries().size() == 1);
  const auto& e = trace->entries()[0];
  CHECK(e.layer == "model.layers.1.mlp.down_proj");
  CHECK((e.experts.sizes() == torch::IntArrayRef({6, 2})));
  CHECK(torch::allclose(e.gates.sum(1), torch::ones({6})));
  auto [experts, gates] = m.route(x);
  CHECK(torch::equal(e.experts, experts));
  CHECK(torch::allclose(e.gates, gates));
  // Highest gate first.
  CHECK((e.gates.select(1, 0) >= e.gates.select(1, 1)).all().item<bool>());
  m.context()->set_recorder(nullptr);
  m.forward(x, torch::zeros({2, 3, 5}));
  CHECK(trace->entries().size() == 1);
}

TEST_CASE("molora: bf16 compute follows the fp32 result and gives fp32 master gradients") {
  torch::manual_seed(7);
  MoloraOptions o;
  o.experts = 4, o.top_k = 2, o.r = 4;
  MoloraAdapter m(32, 24, o);
  randomise(m);
  auto x = torch::randn({16, 32});
  auto base = torch::randn({16, 24});
  auto y32 = m.forward(x, base).detach();
  auto y16 = m.forward(x.to(torch::kBFloat16), base.to(torch::kBFloat16));
  CHECK((y16.scalar_type() == torch::kBFloat16));
  auto rel = (y16.detach().to(torch::kFloat32) - y32).abs().max().item<double>() /
             y32.abs().max().item<double>();
  CHECK(rel < 0.03);
  y16.to(torch::kFloat32).sum().backward();
  CHECK((m.lora_A.grad().scalar_type() == torch::kFloat32));
  CHECK((m.router_weight.grad().scalar_type() == torch::kFloat32));
  CHECK(m.router_weight.grad().abs().sum().item<double>() > 0);
}

TEST_CASE("molora: training and inference give the same outputs (no dropout, no jitter)") {
  torch::manual_seed(8);
  MoloraOptions o;
  o.experts = 6, o.top_k = 2, o.r = 3;
  MoloraAdapter m(10, 7, o);
  randomise(m);
  auto x = torch::randn({3, 9, 10});
  auto base = torch::randn({3, 9, 7});
  m.train();
  auto yt = m.forward(x, base).detach();
  m.eval();
  torch::NoGradGuard g;
  auto ye = m.forward(x, base);
  // Different kernels (grouped experts with autograd, all-expert GEMMs without), same values.
  CHECK(torch::allclose(yt, ye, 1e-5, 1e-6));
  // Any batch size: one sequence at a time gives the same rows.
  for (int64_t b = 0; b < 3; ++b)
    CHECK(torch::allclose(m.forward(x[b], base[b]), ye[b], 1e-5, 1e-6));
}

TEST_CASE("molora: inference without autograd matches the dense reference at any batch size") {
  // Up to 16 tokens under NoGradGuard take the decode kernel, more the all-experts GEMMs.
  torch::manual_seed(7);
  MoloraOptions o;
  o.experts = 6, o.top_k = 2, o.r = 3;
  MoloraAdapter m(16, 11, o);
  randomise(m);
  m.eval();
  for (int64_t n : {1, 2, 16, 17, 40}) {
    CAPTURE(n);
    auto x = torch::randn({n, 1, 16}, torch::kFloat64);
    auto base = torch::randn({n, 1, 11}, torch::kFloat64);
    auto want = dense_reference(x, base, m.lora_A.to(torch::kFloat64), m.lora_B.to(torch::kFloat64),
                                m.router_weight.to(torch::kFloat64),
                                m.router_bias.to(torch::kFloat64), o.top_k, m.scaling());
    auto base_before = base.clone();
    torch::Tensor got;
    {
      torch::NoGradGuard no_grad;
      got = m.forward(x, base);
    }
    check_close(got, want, "output");
    CHECK(torch::equal(base, base_before));  // the base output is not written in place
  }
}

TEST_CASE("molora: cached bf16 expert weights follow in-place updates of the fp32 masters") {
  torch::manual_seed(8);
  MoloraOptions o;
  o.experts = 4, o.top_k = 2, o.r = 2;
  MoloraAdapter m(8, 6, o);
  randomise(m);
  m.eval();
  auto x = torch::randn({3, 8}).to(torch::kBFloat16);
  auto base = torch::zeros({3, 6}, torch::kBFloat16);
  torch::NoGradGuard no_grad;
  auto first = m.forward(x, base);
  m.lora_B.mul_(2.0);  // what an optimiser step or a weight load does: an in-place update
  auto second = m.forward(x, base);
  check_close(second.to(torch::kFloat32), 2 * first.to(torch::kFloat32), "doubled B", 2e-2);
}

TEST_CASE("molora: router_temperature T divides the logits before top-k and softmax") {
  torch::manual_seed(3);
  MoloraOptions hot;
  hot.router_temperature = 2.0;
  MoloraAdapter tempered(16, 12, hot);
  randomise(tempered);
  // The same layer with W_r / T and b_r / T at T = 1 routes and outputs identically.
  MoloraAdapter scaled(16, 12, MoloraOptions{});
  {
    torch::NoGradGuard no_grad;
    for (auto& p : scaled.named_parameters()) p.value().copy_(tempered.named_parameters()[p.key()]);
    scaled.router_weight.div_(2.0);
    scaled.router_bias.div_(2.0);
  }
  auto x = torch::randn({7, 16});
  auto base = torch::randn({7, 12});
  auto [experts_t, gates_t] = tempered.route(x);
  auto [experts_s, gates_s] = scaled.route(x);
  CHECK(torch::equal(experts_t, experts_s));
  check_close(gates_t, gates_s, "gates", 1e-5);
  check_close(tempered.forward(x, base), scaled.forward(x, base), "output", 1e-5);
  // A hotter router mixes more evenly: the top gate shrinks.
  MoloraAdapter cold(16, 12, MoloraOptions{});
  {
    torch::NoGradGuard no_grad;
    for (auto& p : cold.named_parameters()) p.value().copy_(tempered.named_parameters()[p.key()]);
  }
  CHECK(gates_t.select(1, 0).mean().item<double>() <
        std::get<1>(cold.route(x)).select(1, 0).mean().item<double>());
  MoloraOptions zero;
  zero.router_temperature = 0.0;
  CHECK_THROWS_WITH_AS(MoloraAdapter(16, 12, zero), doctest::Contains("router_temperature"),
                       ming::UsageError);
}

TEST_CASE(
    "molora: router_temperature goes from the training YAML to adapter_config.json and help") {
  namespace config = ming::config;
  auto doc = config::parse_document(
      "model_name_or_path: m\ndataset: [{path: d.jsonl}]\nmoe: {router_temperature: 0.5}\n",
      "run.yaml");
  auto options = config::read<ming::train::TrainOptions>(doc);
  auto adapter = options.adapter_config();
  REQUIRE(adapter.groups[0].is_moe());
  CHECK(adapter.groups[0].molora_options().router_temperature == 0.5);
  auto json = ming::adapt::adapter_config_json(adapter, "m");
  CHECK(json["moe"]["groups"][0]["router_temperature"] == 0.5);
  auto back = ming::adapt::adapter_config_from_json(json, "adapter_config.json");
  CHECK(back.groups[0].router_temperature == 0.5);
  CHECK(config::help_text<ming::train::TrainOptions>().find("moe.router_temperature") !=
        std::string::npos);
}
