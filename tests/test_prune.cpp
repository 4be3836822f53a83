// ming-merge prune: dropping rarely used MoLoRA experts, with routing renormalised over the rest,
// and convert (MING-MOE -> ming, ming -> PEFT).
#include <doctest/doctest.h>

#include <regex>

#include <torch/torch.h>

#include "ming/adapt/merge_shell.h"
#include "ming/adapt/prune.h"
#include "ming/core/error.h"
#include "ming/io/json.h"
#include "ming/io/safetensors.h"
#include "support.h"
#include "test_merge_fixtures.h"

using namespace ming;
using namespace ming::adapt;
using ming::test::TempDir;
namespace fs = std::filesystem;

namespace {

// Attention LoRA r2 + MLP MoLoRA with 4 experts, top-2, router bias.
AdapterConfig four_experts() {
  AdapterConfig c;
  c.groups[0].r = 2;
  c.groups[0].alpha = 4;
  c.groups[1].experts = 4;
  c.groups[1].top_k = 2;
  c.groups[1].r = 2;
  c.groups[1].alpha = 4;
  return c;
}

std::shared_ptr<MoloraAdapter> find_moe(const AdapterShell& shell, const std::string& path) {
  for (auto& [p, m] : molora_adapters(shell.adapter))
    if (p == path) return m;
  return nullptr;
}

// Usage for every MLP projection of the TinyDecoder: uniform except the ones given.
void write_usage(const fs::path& file, const std::map<std::string, std::vector<double>>& special) {
  io::Json j = io::Json::object();
  for (int l = 0; l < 2; ++l)
    for (const char* proj : {"gate_proj", "up_proj", "down_proj"}) {
      const std::string name = fmt::format("model.layers.{}.mlp.{}", l, proj);
      j[name] =
          special.count(name) ? special.at(name) : std::vector<double>{0.25, 0.25, 0.25, 0.25};
    }
  test::write_text(file, j.dump());
}

}  // namespace

TEST_CASE("prune: drops experts below the threshold with their router rows, keeps the rest") {
  TempDir tmp("ming-prune");
  test::write_tiny_decoder_adapter(tmp / "moe", four_experts(), 5);
  write_usage(tmp / "usage.json", {{"model.layers.0.mlp.gate_proj", {0.4, 0.05, 0.3, 0.25}},
                                   {"model.layers.1.mlp.down_proj", {0.01, 0.02, 0.47, 0.5}}});
  PruneOptions o;
  o.adapter = tmp / "moe";
  o.route_stats = tmp / "usage.json";
  o.threshold = 0.1;
  o.output = tmp / "pruned";
  const auto report = prune_experts(o);
  CHECK(report.n_dropped == 3);
  CHECK(report.field == "values");

  auto before = load_adapter_shell(tmp / "moe");
  auto after = load_adapter_shell(tmp / "pruned");
  auto check_kept = [&](const std::string& path, const std::vector<int64_t>& kept) {
    auto b = find_moe(before, path), a = find_moe(after, path);
    REQUIRE(a);
    CHECK(a->options().experts == int64_t(kept.size()));
    auto idx = torch::tensor(kept, torch::kInt64);
    CHECK(torch::equal(a->lora_A, b->lora_A.index_select(0, idx)));
    CHECK(torch::equal(a->lora_B, b->lora_B.index_select(0, idx)));
    CHECK(torch::equal(a->router_weight, b->router_weight.index_select(0, idx)));
    CHECK(torch::equal(a->router_bias, b->router_bias.index_select(0, idx)));
  };
  check_kept("model.layers.0.mlp.gate_proj", {0, 2, 3});
  check_kept("model.layers.1.mlp.down_proj", {2, 3});
  check_kept("model.layers.0.mlp.up_proj", {0, 1, 2, 3});
  // The attention LoRA is untouched.
  auto lb = lora_adapters(before.adapter), la = lora_adapters(after.adapter);
  REQUIRE(la.size() == lb.size());
  for (size_t i = 0; i < la.size(); ++i)
    CHECK(torch::equal(la[i].second->lora_B, lb[i].second->lora_B));

  // Routing renormalised over the rest: the pruned layer computes what the original computes
  // with the dropped experts' logits pushed to -inf.
  auto b = find_moe(before, "model.layers.0.mlp.gate_proj");
  auto a = find_moe(after, "model.layers.0.mlp.gate_proj");
  {
    torch::NoGradGuard g;
    b->router_bias[1] = -1e9;
  }
  a->eval();
  b->eval();
  auto x = torch::randn({2, 5, 8});
  auto base = torch::randn({2, 5, 12});
  CHECK(torch::allclose(a->forward(x, base), b->forward(x, base), 1e-5, 1e-6));
}

TEST_CASE("prune: k is lowered when fewer experts remain; one expert left becomes a plain LoRA") {
  TempDir tmp("ming-prune");
  auto cfg = four_experts();
  cfg.groups[1].shared_expert = true;
  test::write_tiny_decoder_adapter(tmp / "moe", cfg, 6);
  write_usage(tmp / "usage.json", {{"model.layers.0.mlp.up_proj", {0.9, 0.02, 0.03, 0.05}}});
  PruneOptions o;
  o.adapter = tmp / "moe";
  o.route_stats = tmp / "usage.json";
  o.threshold = 0.1;
  o.output = tmp / "pruned";
  const auto report = prune_experts(o);
  for (const auto& pp : report.projections)
    if (pp.module == "model.layers.0.mlp.up_proj") {
      CHECK(pp.kept == std::vector<int64_t>{0});
      CHECK(pp.top_k_after == 1);
    }
  auto before = load_adapter_shell(tmp / "moe");
  auto after = load_adapter_shell(tmp / "pruned");
  CHECK_FALSE(find_moe(after, "model.layers.0.mlp.up_proj"));
  auto b = find_moe(before, "model.layers.0.mlp.up_proj");
  bool found = false;
  for (auto& [path, lora] : lora_adapters(after.adapter))
    if (path == "model.layers.0.mlp.up_proj") {
      found = true;
      auto expected =
          (torch::mm(b->lora_B[0], b->lora_A[0]) + torch::mm(b->shared_B, b->shared_A)) *
          b->scaling();
      CHECK(torch::allclose(lora->delta_weight(), expected, 1e-5, 1e-6));
      // And the same function: top-1 over one expert always gives it gate 1.
      lora->eval();
      auto x = torch::randn({3, 8});
      auto base = torch::zeros({3, 12});
      CHECK(torch::allclose(lora->forward(x, base), torch::mm(x, expected.t()), 1e-5, 1e-6));
    }
  CHECK(found);
  // Two experts left with k = 2 stay k = 2; the other layers keep all four.
  CHECK(find_moe(after, "model.layers.1.mlp.up_proj")->options().experts == 4);
}

TEST_CASE("prune: bad inputs are usage errors; the CLI exits 2 and writes nothing") {
  TempDir tmp("ming-prune");
  test::write_tiny_decoder_adapter(tmp / "moe", four_experts(), 5);
  write_usage(tmp / "usage.json", {{"model.layers.0.mlp.gate_proj", {0.01, 0.02, 0.03, 0.04}}});
  PruneOptions o;
  o.adapter = tmp / "moe";
  o.route_stats = tmp / "usage.json";
  o.threshold = 0.1;
  o.output = tmp / "pruned";
  CHECK_THROWS_WITH_AS(prune_experts(o), doctest::Contains("would drop all 4 experts"), UsageError);
  CHECK(test::no_output_left(tmp / "pruned"));
  test::write_text(tmp / "short.json", R"({"model.layers.0.mlp.gate_proj": [0.5, 0.5]})");
  o.route_stats = tmp / "short.json";
  CHECK_THROWS_AS(prune_experts(o), UsageError);

  const std::string tool = test::tool("ming-merge").string();
  auto r = test::run_command(tool + " prune --adapter " + (tmp / "moe").string() +
                             " --route-stats " + (tmp / "missing.json").string() +
                             " --threshold 0.05 -o " + (tmp / "pruned").string());
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("missing.json") != std::string::npos);
  CHECK(test::no_output_left(tmp / "pruned"));

  write_usage(tmp / "ok.json", {{"model.layers.0.mlp.gate_proj", {0.5, 0.5, 0.0, 0.0}}});
  r = test::run_command(tool + " prune --adapter " + (tmp / "moe").string() + " --route-stats " +
                        (tmp / "ok.json").string() + " --threshold 0.05 -o " +
                        (tmp / "pruned").string());
  CHECK(r.exit_code == 0);
  CHECK(fs::exists(tmp / "pruned" / "adapter_config.json"));
}

TEST_CASE(
    "convert --to peft keeps the LoRA parts exactly and drops experts; --from ming-moe reads MING "
    "names") {
  TempDir tmp("ming-prune");
  auto cfg = four_experts();
  cfg.groups[0].use_rslora = true;  // folded into alpha for PEFT
  test::write_tiny_decoder_adapter(tmp / "moe", cfg, 7);
  ConvertAdapterOptions o;
  o.input = tmp / "moe";
  o.output = tmp / "peft";
  const auto report = convert_to_peft(o);
  CHECK(report.n_lora == 8);
  CHECK(report.n_molora_dropped == 6);
  auto config = io::read_json(tmp / "peft" / "adapter_config.json");
  CHECK_FALSE(config.contains("moe"));
  CHECK(config["use_rslora"] == false);
  for (const auto& name : io::TensorStore::open(tmp / "peft").names())
    CHECK(name.find("mlp") == std::string::npos);
  auto before = load_adapter_shell(tmp / "moe"), after = load_adapter_shell(tmp / "peft");
  CHECK(after.adapter.format == "peft");
  auto lb = lora_adapters(before.adapter), la = lora_adapters(after.adapter);
  REQUIRE(la.size() == lb.size());
  for (size_t i = 0; i < la.size(); ++i)
    CHECK(torch::allclose(la[i].second->delta_weight(), lb[i].second->delta_weight(), 1e-6, 1e-7));

  // A MING-MOE release: PEFT config + MING-style expert names (lora_A_{i}, switch).
  fs::create_directories(tmp / "mingmoe");
  io::Json peft = io::read_json(tmp / "peft" / "adapter_config.json");
  io::write_json(tmp / "mingmoe" / "adapter_config.json", peft);
  io::NamedTensors tensors;
  for (const auto& [name, t] : adapter_state(*before.module)) {
    static const std::regex expert(R"(\.experts\.(\d+)\.lora_([AB])\.weight$)");
    static const std::regex router(R"(\.router\.)");
    std::string key = std::regex_replace(name, expert, ".experts.$1.lora_$2_$1.weight");
    key = std::regex_replace(key, router, ".switch.");
    tensors.emplace_back(key, t.detach().clone());
  }
  io::save_safetensors(tmp / "mingmoe" / "adapter_model.safetensors", tensors);
  o.input = tmp / "mingmoe";
  o.output = tmp / "ming";
  const auto imported = convert_to_ming(o);
  CHECK(imported.input_format == "ming-moe");
  CHECK(imported.n_molora_written == 6);
  auto ming_cfg = io::read_json(tmp / "ming" / "adapter_config.json");
  CHECK(ming_cfg["moe"]["top_k"] == 2);
  auto round = load_adapter_shell(tmp / "ming");
  auto mb = molora_adapters(before.adapter), mr = molora_adapters(round.adapter);
  REQUIRE(mb.size() == mr.size());
  for (size_t i = 0; i < mb.size(); ++i) {
    CHECK(torch::equal(mb[i].second->lora_A, mr[i].second->lora_A));
    CHECK(torch::equal(mb[i].second->router_weight, mr[i].second->router_weight));
  }
}

TEST_CASE(
    "convert --to ming-moe writes MING-MOE's release files; importing them is bit-identical") {
  TempDir tmp("ming-prune");
  auto cfg = four_experts();
  cfg.groups[1].top_k = 3;  // not the importer's fallback of 2: k must come from config.json
  cfg.groups[1].shared_expert = true;
  test::write_tiny_decoder_adapter(tmp / "moe", cfg, 9);
  fs::create_directories(tmp / "base");
  io::write_json(tmp / "base" / "config.json", {{"model_type", "qwen2"}, {"hidden_size", 8}});
  ConvertAdapterOptions o;
  o.input = tmp / "moe";
  o.output = tmp / "release";
  o.base_config = tmp / "base";
  const auto report = convert_to_ming_moe(o);
  CHECK(report.n_lora == 8);
  CHECK(report.n_molora_written == 6);

  // The files as MING-MOE's builder reads them.
  const auto config = io::read_json(tmp / "release" / "config.json");
  CHECK(config["model_type"] == "qwen2");
  CHECK(config["num_experts"] == 4);
  CHECK(config["num_experts_per_token"] == 3);
  CHECK(config["share_expert"] == true);
  const auto peft = io::read_json(tmp / "release" / "adapter_config.json");
  CHECK_FALSE(peft.contains("moe"));
  CHECK(peft["r"] == 2);
  CHECK(peft["lora_alpha"] == 4.0);
  for (const auto& name : io::TensorStore::open(tmp / "release").names())
    CHECK(name.find(".mlp.") == std::string::npos);
  const auto non_lora = read_torch_save_dict(tmp / "release" / "non_lora_trainables.bin");
  CHECK(non_lora.size() == 6 * (4 * 2 + 2 + 2));  // experts A/B, switch w/b, shared A/B
  const std::string m = "base_model.model.model.layers.1.mlp.down_proj.";
  REQUIRE(non_lora.count(m + "experts.3.lora_A_3.weight"));
  CHECK(non_lora.at(m + "experts.3.lora_A_3.weight").sizes() == torch::IntArrayRef({2, 12}));
  CHECK(non_lora.at(m + "experts.3.lora_B_3.weight").sizes() == torch::IntArrayRef({8, 2}));
  CHECK(non_lora.at(m + "switch.weight").sizes() == torch::IntArrayRef({4, 12}));
  CHECK(non_lora.at(m + "switch.bias").sizes() == torch::IntArrayRef({4}));
  CHECK(non_lora.count(m + "share_experts.lora_A.weight"));
  CHECK((non_lora.at(m + "switch.weight").scalar_type() == torch::kFloat32));

  // import(export(x)) == x: every tensor bit for bit, and the routing settings.
  o.input = tmp / "release";
  o.output = tmp / "imported";
  o.base_config.clear();
  CHECK(convert_to_ming(o).input_format == "ming-moe");
  auto before = load_adapter_shell(tmp / "moe"), after = load_adapter_shell(tmp / "imported");
  std::map<std::string, torch::Tensor> b;
  for (auto& [name, t] : adapter_state(*before.module)) b[name] = t;
  size_t n = 0;
  for (auto& [name, t] : adapter_state(*after.module)) {
    INFO(name);
    REQUIRE(b.count(name));
    CHECK(torch::equal(b.at(name), t));
    ++n;
  }
  CHECK(n == b.size());
  for (auto& [path, moe] : molora_adapters(after.adapter)) {
    CHECK(moe->options().top_k == 3);
    CHECK(moe->options().experts == 4);
    CHECK(moe->options().shared_expert);
    CHECK(moe->options().router_bias);
    CHECK(moe->scaling() == find_moe(before, path)->scaling());
  }
  // A flag still overrides config.json's k.
  LoadAdapterOptions k1;
  k1.ming_moe_top_k = 1;
  for (auto& [path, moe] : molora_adapters(load_adapter_shell(tmp / "release", k1).adapter))
    CHECK(moe->options().top_k == 1);

  // bf16 files, as MING-MOE trains: the same tensors rounded to bf16.
  o.input = tmp / "moe";
  o.output = tmp / "release-bf16";
  o.ming_moe_dtype = torch::kBFloat16;
  convert_to_ming_moe(o);
  const auto bf16 = read_torch_save_dict(tmp / "release-bf16" / "non_lora_trainables.bin");
  CHECK((bf16.at(m + "switch.weight").scalar_type() == torch::kBFloat16));
  CHECK(torch::equal(
      bf16.at(m + "switch.weight"),
      find_moe(before, "model.layers.1.mlp.down_proj")->router_weight.to(torch::kBFloat16)));

  // What the format cannot hold is refused, naming it.
  test::write_tiny_decoder_adapter(tmp / "lora", AdapterConfig::lora({"q_proj"}, 2, 4.0), 1);
  o.input = tmp / "lora";
  o.output = tmp / "x";
  CHECK_THROWS_WITH_AS(convert_to_ming_moe(o), doctest::Contains("has no MoLoRA experts"),
                       UsageError);
  auto odd = four_experts();
  odd.groups[1].alpha = 8;
  test::write_tiny_decoder_adapter(tmp / "odd", odd, 2);
  o.input = tmp / "odd";
  CHECK_THROWS_WITH_AS(convert_to_ming_moe(o), doctest::Contains("loader gives the experts"),
                       UsageError);
  CHECK(test::no_output_left(tmp / "x"));
}
