// Activation recomputation and the chunked labelled-position loss: gradients and trained
// adapters against the plain forward / full-logits loss.
#include <doctest/doctest.h>

#include <torch/torch.h>

#include "ming/adapt/config.h"
#include "ming/bench/bench.h"
#include "ming/data/encode.h"
#include "ming/model/recompute.h"
#include "ming/train/loss.h"

using namespace ming;

namespace {

struct Setup {
  model::CausalLM lm{nullptr};
  adapt::InjectedAdapters adapters;
};

// The tiny shape with MING-MOE's layout; dropout and jitter as given, the Mixtral balance loss
// on so that loss terms produced inside layers take part.
Setup make_model(double dropout, double jitter) {
  torch::manual_seed(7);
  auto config = bench::model_shape("tiny");
  Setup s;
  s.lm = model::CausalLM(config, torch::TensorOptions().dtype(torch::kFloat32));
  s.lm->init_random();
  auto ac = bench::adapter_config(bench::parse_adapter_shapes("molora")[0]);
  for (auto& g : ac.groups) {
    g.dropout = dropout;
    if (g.is_moe()) {
      g.jitter = jitter;
      g.balance_loss = adapt::BalanceLoss::mixtral;
    }
  }
  s.adapters = adapt::inject_adapters(*s.lm, ac);
  torch::NoGradGuard no_grad;
  for (auto& p : s.adapters.parameters) p.normal_(0, 0.05);  // B non-zero: gradients everywhere
  s.lm->train();
  return s;
}

// Labels: the next ids, with the first quarter of each row ignored; padding at the end of row 1.
struct Batch {
  torch::Tensor ids, labels, mask;
};
Batch make_batch(int64_t vocab, uint64_t seed) {
  torch::manual_seed(seed);
  const int64_t B = 2, T = 24;
  Batch b;
  b.ids = torch::randint(vocab, {B, T}, torch::kInt64);
  b.labels = b.ids.clone();
  b.labels.narrow(1, 0, T / 4).fill_(data::kIgnoreIndex);
  b.mask = torch::ones({B, T}, torch::kInt64);
  b.mask[1].narrow(0, T - 5, 5).fill_(0);
  b.labels[1].narrow(0, T - 5, 5).fill_(data::kIgnoreIndex);
  return b;
}

torch::Tensor full_logits_loss(model::CausalLM& lm, const Batch& b) {
  model::ForwardOptions fo;
  fo.attention_mask = b.mask;
  auto logits = lm->forward(b.ids, fo);
  const int64_t T = b.ids.size(1);
  return torch::nn::functional::cross_entropy(
      logits.narrow(1, 0, T - 1).reshape({-1, logits.size(-1)}).to(torch::kFloat32),
      b.labels.narrow(1, 1, T - 1).reshape({-1}),
      torch::nn::functional::CrossEntropyFuncOptions()
          .ignore_index(data::kIgnoreIndex)
          .reduction(torch::kSum));
}

torch::Tensor chunked_loss(model::CausalLM& lm, const Batch& b, bool recompute, int64_t chunk) {
  model::ForwardOptions fo;
  fo.attention_mask = b.mask;
  fo.output = model::ForwardOutput::hidden;
  fo.recompute = recompute;
  return train::labelled_token_loss(lm, lm->forward(b.ids, fo), b.labels, chunk);
}

// One loss + aux backward; returns the loss and the router load of that forward.
std::pair<double, std::map<std::string, adapt::LayerLoad>> backward_once(Setup& s, const Batch& b,
                                                                         int mode) {
  s.adapters.context->set_token_mask(b.mask);
  auto loss = mode == 0 ? full_logits_loss(s.lm, b) : chunked_loss(s.lm, b, mode == 2, 7);
  auto total = loss / 10.0 + s.adapters.context->take_aux_loss();
  auto load = s.adapters.context->take_load();
  total.backward();
  s.adapters.context->clear_token_mask();
  return {loss.item<double>(), load};
}

// Adapters after `steps` AdamW (or SGD) steps. mode 0: full logits; 1: chunked loss; 2: chunked
// loss and recomputed layers.
std::vector<torch::Tensor> train_steps(int mode, int steps, double dropout, double jitter,
                                       bool adam = true) {
  auto s = make_model(dropout, jitter);
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  if (adam)
    optimizer = std::make_unique<torch::optim::AdamW>(s.adapters.parameters,
                                                      torch::optim::AdamWOptions(1e-2));
  else
    optimizer =
        std::make_unique<torch::optim::SGD>(s.adapters.parameters, torch::optim::SGDOptions(0.5));
  auto& opt = *optimizer;
  for (int step = 0; step < steps; ++step) {
    auto b = make_batch(s.lm->config().vocab_size, 100 + step);
    torch::manual_seed(1000 + step);  // the dropout / jitter stream
    opt.zero_grad();
    backward_once(s, b, mode);
    opt.step();
  }
  std::vector<torch::Tensor> out;
  for (auto& p : s.adapters.parameters) out.push_back(p.detach().clone());
  return out;
}

double max_relative_difference(const std::vector<torch::Tensor>& a,
                               const std::vector<torch::Tensor>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i)
    worst = std::max(
        worst, ((a[i] - b[i]).abs().max() / b[i].abs().max().clamp_min(1e-30)).item<double>());
  return worst;
}

}  // namespace

TEST_CASE("recompute: 5 steps with recomputed layers give bit-identical adapters") {
  auto plain = train_steps(1, 5, 0.0, 0.0);
  auto recomputed = train_steps(2, 5, 0.0, 0.0);
  REQUIRE(plain.size() == recomputed.size());
  for (size_t i = 0; i < plain.size(); ++i) CHECK(torch::equal(plain[i], recomputed[i]));
}

TEST_CASE("recompute: dropout and router jitter are replayed, load is counted once") {
  auto s1 = make_model(0.1, 0.2);
  auto s2 = make_model(0.1, 0.2);
  auto b = make_batch(s1.lm->config().vocab_size, 3);
  torch::manual_seed(99);
  auto [loss1, load1] = backward_once(s1, b, 1);
  auto next1 = torch::rand({4});
  torch::manual_seed(99);
  auto [loss2, load2] = backward_once(s2, b, 2);
  auto next2 = torch::rand({4});  // the random stream continues as if nothing were replayed
  CHECK(loss1 == loss2);
  for (size_t i = 0; i < s1.adapters.parameters.size(); ++i) {
    const auto &g1 = s1.adapters.parameters[i].grad(), &g2 = s2.adapters.parameters[i].grad();
    REQUIRE(g1.defined());
    REQUIRE(g2.defined());
    CHECK(torch::equal(g1, g2));
  }
  REQUIRE(load1.size() == load2.size());
  for (const auto& [layer, l] : load1) {
    CHECK(load2.at(layer).counts == l.counts);
    CHECK(load2.at(layer).tokens == l.tokens);
  }
  CHECK(torch::equal(next1, next2));
}

TEST_CASE("loss: 5 steps with the chunked loss stay within 1e-5 of the full-logits loss") {
  // SGD, because AdamW normalises each element's step: an element whose gradient is zero up to
  // rounding moves by +-lr on the sign of that rounding (measured: 2e-3 relative at lr 1e-2),
  // which says nothing about the loss.
  auto full = train_steps(0, 5, 0.0, 0.0, /*adam=*/false);
  auto chunked = train_steps(1, 5, 0.0, 0.0, /*adam=*/false);
  CHECK(max_relative_difference(chunked, full) <= 1e-5);
  CHECK(max_relative_difference(chunked, train_steps(0, 0, 0.0, 0.0)) > 1e-3);  // it trained
}

TEST_CASE("loss: labelled positions only, any chunk size, trainable tied head included") {
  auto s = make_model(0.0, 0.0);
  s.lm->set_trainable(true);  // the tied embedding is the head: its gradient goes both ways
  auto b = make_batch(s.lm->config().vocab_size, 4);
  auto grads_of = [&](const std::function<torch::Tensor()>& loss_fn) {
    s.lm->zero_grad();
    auto loss = loss_fn();
    loss.backward();
    std::vector<torch::Tensor> g;
    for (auto& p : s.lm->parameters())
      g.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
    return std::make_pair(loss.item<double>(), g);
  };
  auto [want, want_g] = grads_of([&] { return full_logits_loss(s.lm, b); });
  for (int64_t chunk : {1, 5, 1000}) {
    CAPTURE(chunk);
    auto [got, got_g] = grads_of([&] { return chunked_loss(s.lm, b, false, chunk) * 1.0; });
    CHECK(got == doctest::Approx(want).epsilon(1e-6));
    CHECK(max_relative_difference(got_g, want_g) <= 1e-5);
  }
  torch::NoGradGuard no_grad;
  CHECK(chunked_loss(s.lm, b, false, 3).item<double>() == doctest::Approx(want).epsilon(1e-6));
}

TEST_CASE("recompute: without autograd a region is a plain call") {
  int calls = 0;
  auto fn = [&](const std::vector<torch::Tensor>& in) {
    ++calls;
    CHECK_FALSE(model::replaying());
    return std::vector<torch::Tensor>{in[0] * 2};
  };
  auto x = torch::ones({3});
  auto out = model::run_recomputed(fn, {x}, {});
  CHECK(calls == 1);
  CHECK(torch::equal(out[0], x * 2));
  CHECK_FALSE(model::defer_region_loss(x, nullptr));
}
