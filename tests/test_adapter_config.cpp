// Adapter configuration and injection into a model's Projections.
#include <doctest/doctest.h>

#include <torch/torch.h>

#include "ming/adapt/config.h"
#include "ming/core/error.h"
#include "support.h"
#include "test_adapter_model.h"

using namespace ming::adapt;
using ming::test::TinyDecoder;

TEST_CASE("adapter config: the default is MING-MOE's layout") {
  AdapterConfig c;
  REQUIRE(c.groups.size() == 2);
  const auto& att = c.groups[0];
  CHECK((att.targets == std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj"}));
  CHECK(att.experts == 1);
  CHECK(att.r == 16);
  CHECK(att.alpha == 32.0);
  CHECK(att.dropout == 0.05);
  const auto& mlp = c.groups[1];
  CHECK((mlp.targets == std::vector<std::string>{"gate_proj", "up_proj", "down_proj"}));
  CHECK(mlp.experts == 8);
  CHECK(mlp.top_k == 2);
  CHECK(mlp.r == 16);
  CHECK(mlp.alpha == 32.0);
  CHECK(mlp.router_bias);
  CHECK(mlp.balance_loss == BalanceLoss::none);
  CHECK_FALSE(mlp.shared_expert);
  CHECK_NOTHROW(validate(c));
}

TEST_CASE("adapter config: targets match PEFT-style suffixes and full-path regexes") {
  CHECK(target_matches("q_proj", "model.layers.3.self_attn.q_proj"));
  CHECK(target_matches("q_proj", "q_proj"));
  CHECK(target_matches("self_attn.q_proj", "model.layers.3.self_attn.q_proj"));
  CHECK_FALSE(target_matches("proj", "model.layers.3.self_attn.q_proj"));
  CHECK_FALSE(target_matches("q_proj", "model.layers.3.self_attn.q_proj2"));
  CHECK(target_matches(R"(re:.*layers\.(0|1)\.mlp\.up_proj)", "model.layers.1.mlp.up_proj"));
  CHECK_FALSE(target_matches(R"(re:.*layers\.(0|1)\.mlp\.up_proj)", "model.layers.11.mlp.up_proj"));
  CHECK_FALSE(target_matches(R"(re:layers\.1\.mlp)", "model.layers.1.mlp.up_proj"));  // full match
}

TEST_CASE("adapter config: invalid groups are usage errors naming the group and field") {
  AdapterConfig c;
  c.groups[1].top_k = 9;
  CHECK_THROWS_WITH_AS(validate(c), doctest::Contains("'mlp': top_k"), ming::UsageError);
  c = AdapterConfig{};
  c.groups[0].r = 0;
  CHECK_THROWS_WITH_AS(validate(c), doctest::Contains("'attention': r"), ming::UsageError);
  c = AdapterConfig{};
  c.groups[0].targets = {"re:(unclosed"};
  CHECK_THROWS_WITH_AS(validate(c), doctest::Contains("invalid regular expression"),
                       ming::UsageError);
  c = AdapterConfig{};
  c.groups[1].dropout = 1.0;
  CHECK_THROWS_AS(validate(c), ming::UsageError);
  CHECK_THROWS_WITH_AS(group_from_json(nlohmann::json{{"name", "x"}, {"rank", 4}}, "cfg.json"),
                       doctest::Contains("'rank'"), ming::UsageError);
  CHECK_THROWS_WITH_AS(group_from_json(nlohmann::json{{"balance_loss", "aux"}}, "cfg.json"),
                       doctest::Contains("aux"), ming::UsageError);
}

TEST_CASE("adapter config: groups round-trip through JSON") {
  TargetGroup g = AdapterConfig{}.groups[1];
  g.balance_loss = BalanceLoss::mixtral;
  g.shared_expert = true;
  g.jitter = 0.01;
  auto back = group_from_json(to_json(g), "test");
  CHECK(to_json(back) == to_json(g));
}

TEST_CASE("inject: attaches LoRA to attention and MoLoRA to MLP, freezes everything else") {
  torch::manual_seed(0);
  TinyDecoder model(2, 16, 24);
  auto injected = inject_adapters(model, AdapterConfig{});
  CHECK(injected.adapters.size() == 2 * 7);
  int n_lora = 0, n_moe = 0;
  for (auto& [name, a] : injected.adapters) {
    if (std::dynamic_pointer_cast<LoraAdapter>(a)) {
      ++n_lora;
      CHECK(name.find("self_attn") != std::string::npos);
    }
    if (auto m = std::dynamic_pointer_cast<MoloraAdapter>(a)) {
      ++n_moe;
      CHECK(name.find(".mlp.") != std::string::npos);
      CHECK(m->name() == name);
      CHECK(m->context() == injected.context);
    }
  }
  CHECK(n_lora == 8);
  CHECK(n_moe == 6);
  // Trainable = exactly the adapters; the embedding and base weights are frozen.
  const AdapterConfig c;
  int64_t expected = 0;
  for (int l = 0; l < 2; ++l) {
    expected += 4 * adapter_parameter_count(c.groups[0], 16, 16);
    expected += 2 * adapter_parameter_count(c.groups[1], 16, 24);
    expected += adapter_parameter_count(c.groups[1], 24, 16);
  }
  CHECK(injected.n_trainable == expected);
  CHECK(count_trainable_parameters(model) == expected);
  CHECK_FALSE(model.embed->weight.requires_grad());
  for (const auto& p : model.named_parameters())
    CHECK(p.value().requires_grad() == (p.key().find("adapter") != std::string::npos));
  // MoLoRA layer count by hand: 8 experts * 16 * (16 + 24) + router 8 * 16 + 8.
  CHECK(adapter_parameter_count(c.groups[1], 16, 24) == 8 * 16 * 40 + 8 * 16 + 8);
  // Fresh adapters keep the model equal to the base.
  auto ids = torch::randint(0, 10, {2, 5});
  auto with = model.forward(ids);
  remove_adapters(model);
  CHECK(torch::allclose(with, model.forward(ids)));
}

TEST_CASE("inject: rank_pattern and alpha_pattern override plain LoRA groups per module") {
  TinyDecoder model(2, 16, 24);
  AdapterConfig c = AdapterConfig::lora({"q_proj", "v_proj"}, 8, 16.0, 0.0);
  c.rank_pattern = {{"layers\\.1\\.self_attn\\.q_proj", 2}};
  c.alpha_pattern = {{"v_proj", 4.0}};
  auto injected = inject_adapters(model, c);
  for (auto& [name, a] : injected.adapters) {
    auto lora = std::dynamic_pointer_cast<LoraAdapter>(a);
    REQUIRE(lora);
    CHECK(lora->options().r == (name == "model.layers.1.self_attn.q_proj" ? 2 : 8));
    CHECK(lora->options().alpha == (name.find("v_proj") != std::string::npos ? 4.0 : 16.0));
  }
}

TEST_CASE("inject: a group matching no projection is a usage error naming it") {
  TinyDecoder model(1, 8, 12);
  AdapterConfig c = AdapterConfig::lora({"qkv_proj"});
  CHECK_THROWS_WITH_AS(inject_adapters(model, c), doctest::Contains("'lora'"), ming::UsageError);
  CHECK_THROWS_WITH_AS(inject_adapters(model, c), doctest::Contains("qkv_proj"), ming::UsageError);
}

TEST_CASE("inject: the first matching group wins") {
  TinyDecoder model(1, 8, 12);
  AdapterConfig c;
  TargetGroup all;
  all.name = "everything";
  all.targets = {"re:.*proj"};
  c.groups.push_back(all);  // after attention and mlp: gets nothing, which is an error
  CHECK_THROWS_AS(inject_adapters(model, c), ming::UsageError);
  c.groups = {AdapterConfig{}.groups[1], all};
  auto injected = inject_adapters(model, c);
  for (auto& [name, a] : injected.adapters)
    CHECK((std::dynamic_pointer_cast<MoloraAdapter>(a) != nullptr) ==
          (name.find(".mlp.") != std::string::npos));
}
