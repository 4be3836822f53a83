// ming-merge combine / upcycle: PEFT's add_weighted_adapter methods on plain-LoRA adapters, and
// MoLoRA adapters built from single-task LoRA adapters.
#include <doctest/doctest.h>

#include <cmath>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "ming/adapt/combine.h"
#include "ming/adapt/merge_shell.h"
#include "ming/core/error.h"
#include "ming/io/json.h"
#include "support.h"
#include "test_merge_fixtures.h"

using namespace ming;
using namespace ming::adapt;
using ming::test::TempDir;
namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kAll = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                       "gate_proj", "up_proj", "down_proj"};

// module path -> s * B A of every plain LoRA of an adapter folder.
std::map<std::string, torch::Tensor> deltas(const fs::path& dir) {
  auto shell = load_adapter_shell(dir);
  std::map<std::string, torch::Tensor> out;
  for (auto& [path, lora] : lora_adapters(shell.adapter)) out[path] = lora->delta_weight();
  return out;
}

double max_abs(const torch::Tensor& t) {
  return t.abs().max().item<double>();
}

}  // namespace

TEST_CASE("combine cat: exactly sum_i w_i dW_i, ranks and alphas may differ") {
  TempDir tmp("ming-combine");
  test::write_tiny_decoder_adapter(tmp / "a", AdapterConfig::lora({"q_proj", "v_proj"}, 2, 8.0), 1);
  test::write_tiny_decoder_adapter(tmp / "b", AdapterConfig::lora({"q_proj", "up_proj"}, 3, 3.0),
                                   2);
  CombineOptions o;
  o.adapters = {tmp / "a", tmp / "b"};
  o.weights = {0.7, -1.5};
  o.method = CombineMethod::cat;
  o.output = tmp / "out";
  const auto report = combine(o);
  CHECK(report.n_projections == 6);  // q (both), v (a), up (b), 2 layers

  auto da = deltas(tmp / "a"), db = deltas(tmp / "b"), dc = deltas(tmp / "out");
  REQUIRE(dc.size() == 6);
  for (auto& [path, d] : dc) {
    auto expected = torch::zeros_like(d);
    if (da.count(path)) expected += 0.7 * da[path];
    if (db.count(path)) expected += -1.5 * db[path];
    CHECK(max_abs(d - expected) < 1e-6);
  }
  // q_proj has rank 2 + 3; v_proj keeps 2.
  auto shell = load_adapter_shell(tmp / "out");
  for (auto& [path, lora] : lora_adapters(shell.adapter)) {
    if (path.find("q_proj") != std::string::npos) CHECK(lora->lora_A.size(0) == 5);
    if (path.find("v_proj") != std::string::npos) CHECK(lora->lora_A.size(0) == 2);
    CHECK(lora->scaling() == 1.0);
  }
  // A plain PEFT adapter: no "moe" block, per-module ranks through rank_pattern.
  auto config = io::read_json(tmp / "out" / "adapter_config.json");
  CHECK_FALSE(config.contains("moe"));
  CHECK(config["rank_pattern"].size() > 0);
}

TEST_CASE("combine svd: full rank reproduces the weighted sum, rank R is the best rank-R fit") {
  TempDir tmp("ming-combine");
  test::write_tiny_decoder_adapter(tmp / "a", AdapterConfig::lora(kAll, 2, 4.0), 1);
  test::write_tiny_decoder_adapter(tmp / "b", AdapterConfig::lora(kAll, 2, 2.0), 2);
  auto da = deltas(tmp / "a"), db = deltas(tmp / "b");
  CombineOptions o;
  o.adapters = {tmp / "a", tmp / "b"};
  o.weights = {1.0, 0.5};
  o.method = CombineMethod::svd;
  o.rank = 4;  // = rank of the sum
  o.output = tmp / "full";
  combine(o);
  for (auto& [path, d] : deltas(tmp / "full"))
    CHECK(max_abs(d - (da[path] + 0.5 * db[path])) < 1e-4);

  o.rank = 1;
  o.output = tmp / "r1";
  combine(o);
  for (auto& [path, d] : deltas(tmp / "r1")) {
    auto sum = (da[path] + 0.5 * db[path]).to(torch::kFloat64);
    auto s = std::get<1>(at::linalg_svd(sum, false));
    // Eckart-Young: the error of the best rank-1 fit is the rest of the spectrum.
    const double best = s.slice(0, 1).pow(2).sum().sqrt().item<double>();
    CHECK((d.to(torch::kFloat64) - sum).norm().item<double>() ==
          doctest::Approx(best).epsilon(1e-4));
  }

  // Rank above rank(dW): the same product, the extra directions start as a fresh LoRA.
  o.rank = 6;
  o.output = tmp / "r6";
  combine(o);
  auto shell = load_adapter_shell(tmp / "r6");
  for (auto& [path, lora] : lora_adapters(shell.adapter)) {
    CHECK(lora->lora_A.size(0) == 6);
    CHECK(max_abs(lora->lora_B.slice(1, 4)) == 0.0);
    CHECK(max_abs(lora->lora_A.slice(0, 4)) > 0.0);
    CHECK(max_abs(lora->delta_weight() - (da[path] + 0.5 * db[path])) < 1e-4);
  }
}

TEST_CASE("combine ties: trim, elect sign, disjoint merge on a hand-computed example") {
  auto gen = at::detail::createCPUGenerator(0);
  auto t1 = torch::tensor({3.0, -1.0, 2.0, -4.0}), t2 = torch::tensor({-2.0, 1.0, 5.0, 1.0});
  // density 0.5 keeps 2 of 4: t1 -> [3, 0, 0, -4], t2 -> [-2, 0, 5, 0]; total sign of the sum
  // [1, 0, 5, -4] -> [+, +, +, -]; agreeing weighted entries (w = 1, 0.5) averaged.
  auto r =
      merge_task_tensors(CombineMethod::ties, {t1, t2}, {1.0, 0.5}, 0.5, MajoritySign::total, gen);
  CHECK(torch::allclose(r, torch::tensor({3.0, 0.0, 2.5, -4.0})));

  // No trimming; total vs frequency election disagree: column sums [0, 2] -> [+, +], sign
  // counts [-1, -1] -> [-, -].
  auto a = torch::tensor({3.0, -1.0}), b = torch::tensor({-2.0, -1.0}),
       c = torch::tensor({-1.0, 4.0});
  auto total =
      merge_task_tensors(CombineMethod::ties, {a, b, c}, {1, 1, 1}, 1.0, MajoritySign::total, gen);
  CHECK(torch::allclose(total, torch::tensor({3.0, 4.0})));
  auto freq = merge_task_tensors(CombineMethod::ties, {a, b, c}, {1, 1, 1}, 1.0,
                                 MajoritySign::frequency, gen);
  CHECK(torch::allclose(freq, torch::tensor({-1.5, -1.0})));
  CHECK(torch::allclose(magnitude_prune(t1, 0.25), torch::tensor({0.0, 0.0, 0.0, -4.0})));
}

TEST_CASE(
    "combine dare: seeded Bernoulli drops with probability 1 - density, kept entries / density") {
  auto t1 = torch::randn({64, 32}), t2 = torch::randn({64, 32});
  auto g1 = at::detail::createCPUGenerator(5);
  auto r = merge_task_tensors(CombineMethod::dare_linear, {t1, t2}, {0.5, 2.0}, 0.3,
                              MajoritySign::total, g1);
  // By hand with the same generator: masks drawn for t1 then t2.
  auto g2 = at::detail::createCPUGenerator(5);
  auto m1 = torch::bernoulli(torch::full_like(t1, 0.3), g2);
  auto m2 = torch::bernoulli(torch::full_like(t2, 0.3), g2);
  auto expected = 0.5 * t1 * m1 / 0.3 + 2.0 * t2 * m2 / 0.3;
  CHECK(torch::allclose(r, expected, 1e-5, 1e-6));
  const double kept = m1.mean().item<double>();
  CHECK(kept == doctest::Approx(0.3).epsilon(0.15));
  // Seeded: the same seed gives the same result.
  auto g3 = at::detail::createCPUGenerator(5);
  CHECK(torch::equal(r, merge_task_tensors(CombineMethod::dare_linear, {t1, t2}, {0.5, 2.0}, 0.3,
                                           MajoritySign::total, g3)));
}

TEST_CASE("combine linear/ties/dare act on A and B separately with PEFT's sqrt weight split") {
  TempDir tmp("ming-combine");
  test::write_tiny_decoder_adapter(tmp / "a", AdapterConfig::lora({"q_proj"}, 2, 4.0), 1);
  test::write_tiny_decoder_adapter(tmp / "b", AdapterConfig::lora({"q_proj"}, 2, 2.0), 2);
  CombineOptions o;
  o.adapters = {tmp / "a", tmp / "b"};
  o.weights = {-0.5, 1.0};
  o.method = CombineMethod::linear;
  o.output = tmp / "lin";
  combine(o);
  auto a = load_adapter_shell(tmp / "a"), b = load_adapter_shell(tmp / "b");
  auto out = load_adapter_shell(tmp / "lin");
  auto la = lora_adapters(a.adapter), lb = lora_adapters(b.adapter),
       lo = lora_adapters(out.adapter);
  REQUIRE(lo.size() == 2);
  for (size_t i = 0; i < lo.size(); ++i) {
    const double wa = -0.5 * 2.0, wb = 1.0 * 1.0;  // w_i * s_i
    auto A = -std::sqrt(std::abs(wa)) * la[i].second->lora_A + std::sqrt(wb) * lb[i].second->lora_A;
    auto B = std::sqrt(std::abs(wa)) * la[i].second->lora_B + std::sqrt(wb) * lb[i].second->lora_B;
    CHECK(torch::allclose(lo[i].second->lora_A, A, 1e-5, 1e-6));
    CHECK(torch::allclose(lo[i].second->lora_B, B, 1e-5, 1e-6));
  }
  // One adapter alone: B A carries exactly w s B A (the sign sits on A only).
  o.adapters = {tmp / "a"};
  o.weights = {-0.5};
  o.output = tmp / "one";
  combine(o);
  auto one = deltas(tmp / "one");
  for (auto& [path, d] : deltas(tmp / "a")) CHECK(max_abs(one[path] + 0.5 * d) < 1e-6);

  // ties / dare need --density; density 1 with ties on a single adapter is linear again.
  o.method = CombineMethod::ties;
  o.output = tmp / "ties";
  CHECK_THROWS_WITH_AS(combine(o), doctest::Contains("--density"), UsageError);
  o.density = 1.0;
  combine(o);
  auto ties = deltas(tmp / "ties");
  for (auto& [path, d] : deltas(tmp / "a")) CHECK(max_abs(ties[path] + 0.5 * d) < 1e-6);
}

TEST_CASE("combine: rank mismatch for linear, MoLoRA input and another base are usage errors") {
  TempDir tmp("ming-combine");
  test::write_tiny_decoder_adapter(tmp / "r2", AdapterConfig::lora({"q_proj"}, 2, 4.0), 1);
  test::write_tiny_decoder_adapter(tmp / "r3", AdapterConfig::lora({"q_proj"}, 3, 4.0), 2);
  CombineOptions o;
  o.adapters = {tmp / "r2", tmp / "r3"};
  o.method = CombineMethod::linear;
  o.output = tmp / "out";
  CHECK_THROWS_WITH_AS(combine(o), doctest::Contains("r=2"), UsageError);
  CHECK(test::no_output_left(tmp / "out"));

  // Through the CLI: exit 2, the adapters and ranks named, nothing written.
  const std::string tool = test::tool("ming-merge").string();
  auto r = test::run_command(tool + " combine --adapters " + (tmp / "r2").string() + "," +
                             (tmp / "r3").string() + " --method ties --density 0.5 -o " +
                             (tmp / "out").string());
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("r=3") != std::string::npos);
  CHECK(r.err.find((tmp / "r3").string()) != std::string::npos);
  CHECK(test::no_output_left(tmp / "out"));

  test::write_tiny_decoder_adapter(tmp / "wide", AdapterConfig::lora({"q_proj"}, 2, 4.0), 3, 16,
                                   12);
  o.adapters = {tmp / "r2", tmp / "wide"};
  o.method = CombineMethod::cat;
  CHECK_THROWS_WITH_AS(combine(o), doctest::Contains("different base models"), UsageError);

  AdapterConfig moe;
  moe.groups[0].r = 2;
  moe.groups[1].experts = 2;
  moe.groups[1].r = 2;
  test::write_tiny_decoder_adapter(tmp / "moe", moe, 4);
  o.adapters = {tmp / "r2", tmp / "moe"};
  CHECK_THROWS_WITH_AS(combine(o), doctest::Contains("MoLoRA"), UsageError);

  // CLI success path: cat through the tool.
  r = test::run_command(tool + " combine --adapters " + (tmp / "r2").string() + "," +
                        (tmp / "r3").string() + " --weights 1,2 --method cat -o " +
                        (tmp / "out").string());
  CHECK(r.exit_code == 0);
  CHECK(fs::exists(tmp / "out" / "adapter_model.safetensors"));
}

TEST_CASE("upcycle: expert i equals adapter i on the targets, others are the exact mean") {
  TempDir tmp("ming-combine");
  test::write_tiny_decoder_adapter(tmp / "a", AdapterConfig::lora(kAll, 2, 4.0), 1);
  test::write_tiny_decoder_adapter(tmp / "b", AdapterConfig::lora(kAll, 2, 4.0), 2);
  // Adapter c: smaller rank, other alpha, and no down_proj: a fresh (no-op) expert there.
  test::write_tiny_decoder_adapter(
      tmp / "c",
      AdapterConfig::lora({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"}, 1, 3.0),
      3);
  UpcycleOptions o;
  o.adapters = {tmp / "a", tmp / "b", tmp / "c"};
  o.top_k = 2;
  o.output = tmp / "moe";
  const auto report = upcycle(o);
  CHECK(report.n_molora == 6);
  CHECK(report.n_lora == 8);
  CHECK(report.rank == 2);

  std::vector<std::map<std::string, torch::Tensor>> inputs = {deltas(tmp / "a"), deltas(tmp / "b"),
                                                              deltas(tmp / "c")};
  // Loadable into a model, trainable, with the MoLoRA layout asked for.
  auto model = std::make_shared<test::TinyDecoder>(2, 8, 12);
  LoadAdapterOptions trainable;
  trainable.trainable = true;
  auto loaded = load_adapter(*model, tmp / "moe", trainable);
  CHECK(loaded.injected.n_trainable > 0);
  int n_moe = 0, n_lora = 0;
  for (auto& [path, adapter] : loaded.injected.adapters) {
    if (auto moe = std::dynamic_pointer_cast<MoloraAdapter>(adapter)) {
      ++n_moe;
      CHECK(moe->options().experts == 3);
      CHECK(moe->options().top_k == 2);
      for (int e = 0; e < 3; ++e) {
        auto d = torch::mm(moe->lora_B[e], moe->lora_A[e]) * moe->scaling();
        auto expected = inputs[e].count(path) ? inputs[e][path] : torch::zeros_like(d);
        CHECK(max_abs(d - expected) < 1e-6);
      }
    } else if (auto lora = std::dynamic_pointer_cast<LoraAdapter>(adapter)) {
      ++n_lora;
      auto mean = (inputs[0][path] + inputs[1][path] + inputs[2][path]) / 3.0;
      CHECK(max_abs(lora->delta_weight() - mean) < 1e-6);
    }
  }
  CHECK(n_moe == 6);
  CHECK(n_lora == 8);

  // Same rank and scaling: the expert tensors are the adapter's own.
  auto a = load_adapter_shell(tmp / "a");
  auto shell = load_adapter_shell(tmp / "moe");
  auto moes = molora_adapters(shell.adapter);
  for (auto& [path, lora] : lora_adapters(a.adapter))
    for (auto& [mpath, moe] : moes)
      if (mpath == path) {
        CHECK(torch::equal(moe->lora_A[0], lora->lora_A));
        CHECK(torch::equal(moe->lora_B[0], lora->lora_B));
      }

  // Bad inputs: one adapter, top-k above the expert count.
  o.adapters = {tmp / "a"};
  CHECK_THROWS_AS(upcycle(o), UsageError);
  o.adapters = {tmp / "a", tmp / "b"};
  o.top_k = 3;
  CHECK_THROWS_WITH_AS(upcycle(o), doctest::Contains("--top-k"), UsageError);
}

TEST_CASE(
    "upcycle --from-lora: one LoRA in every expert gives that LoRA's logits before training") {
  TempDir tmp("ming-combine");
  test::write_tiny_base(tmp / "base", torch::kFloat32);
  test::write_random_adapter(tmp / "base", tmp / "lora", AdapterConfig::lora(kAll, 4, 8.0), 21);
  UpcycleOptions o;
  o.from_lora = tmp / "lora";
  o.experts = 8;
  o.top_k = 2;
  o.seed = 3;
  o.output = tmp / "moe";
  const auto report = upcycle(o);
  CHECK(report.n_molora == 6);  // gate/up/down of 2 layers
  CHECK(report.n_lora == 8);    // attention: the LoRA itself ("first"), at its own rank
  CHECK(report.rank == 4);

  auto shell = load_adapter_shell(tmp / "moe");
  auto lora = load_adapter_shell(tmp / "lora");
  std::map<std::string, std::shared_ptr<LoraAdapter>> by_path;
  for (auto& [path, l] : lora_adapters(lora.adapter)) by_path[path] = l;
  for (auto& [path, moe] : molora_adapters(shell.adapter)) {
    INFO(path);
    CHECK(moe->options().experts == 8);
    for (int64_t e = 0; e < 8; ++e) {  // every expert is the LoRA, bit for bit
      CHECK(torch::equal(moe->lora_A[e], by_path.at(path)->lora_A));
      CHECK(torch::equal(moe->lora_B[e], by_path.at(path)->lora_B));
    }
    CHECK(moe->router_weight.abs().sum().item<double>() > 0);  // fresh, not zero
    auto [experts, gates] = moe->route(torch::randn({5, moe->in_features()}));
    CHECK(torch::allclose(gates.sum(-1), torch::ones({5}), 1e-6, 1e-6));
  }
  for (auto& [path, l] : lora_adapters(shell.adapter)) {  // same dW (written with scaling 1)
    CHECK(l->lora_A.size(0) == 4);
    CHECK(max_abs(l->delta_weight() - by_path.at(path)->delta_weight()) < 1e-6);
  }

  const auto base = test::tiny_logits(tmp / "base", std::nullopt, torch::kFloat32);
  const auto with_lora = test::tiny_logits(tmp / "base", tmp / "lora", torch::kFloat32);
  const auto with_moe = test::tiny_logits(tmp / "base", tmp / "moe", torch::kFloat32);
  CHECK(max_abs(with_lora - base) > 1e-3);      // the LoRA does change the model ...
  CHECK(max_abs(with_moe - with_lora) < 1e-5);  // ... and the upcycled MoLoRA is that LoRA

  o.experts = 1;
  CHECK_THROWS_AS(upcycle(o), UsageError);
  o.experts = 8;
  o.adapters = {tmp / "lora"};
  CHECK_THROWS_AS(upcycle(o), UsageError);  // --adapters and --from-lora together
}
