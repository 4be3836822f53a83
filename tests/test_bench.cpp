// ming-bench and its library (ming/bench/bench.h): shapes, adapter configurations, the dense
// MING-MOE reference path, FLOP counting, and the tool's JSON output and flag errors.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <ming/adapt/config.h>
#include <ming/bench/bench.h>
#include <ming/core/error.h>

#include "support.h"

namespace {

using namespace ming;

TEST_CASE("bench model shapes match the real Hugging Face configs") {
  auto q = bench::model_shape("qwen2-0.5b");
  CHECK(q.hidden_size == 896);
  CHECK(q.intermediate_size == 4864);
  CHECK(q.num_hidden_layers == 24);
  CHECK(q.num_attention_heads == 14);
  CHECK(q.num_key_value_heads == 2);
  CHECK(q.vocab_size == 151936);
  CHECK(q.tie_word_embeddings);
  CHECK(q.parameter_count() == 494032768);  // Qwen/Qwen2-0.5B's published count
  auto big = bench::model_shape("qwen1.5-1.8b");
  CHECK(big.hidden_size == 2048);
  CHECK(big.intermediate_size == 5504);
  CHECK(big.num_key_value_heads == 16);
  CHECK_FALSE(big.tie_word_embeddings);
  for (const auto& name : bench::model_shape_names()) CHECK_NOTHROW(bench::model_shape(name));
  CHECK_THROWS_AS(bench::model_shape("qwen3"), UsageError);
}

TEST_CASE("bench adapter shape lists split around molora:E,k,r groups") {
  auto shapes = bench::parse_adapter_shapes("none,molora:4,1,8,lora,molora");
  REQUIRE(shapes.size() == 4);
  CHECK(shapes[0].label() == "none");
  CHECK(shapes[1].label() == "molora:4,1,8");
  CHECK(shapes[2].label() == "lora");
  CHECK(shapes[3].label() == "molora:8,2,16");
  auto lora = bench::adapter_config(shapes[2]);
  REQUIRE(lora.groups.size() == 1);
  CHECK_FALSE(lora.groups[0].is_moe());
  auto molora = bench::adapter_config(shapes[1]);
  REQUIRE(molora.groups.size() == 2);
  CHECK(molora.groups[1].experts == 4);
  CHECK(molora.groups[1].top_k == 1);
  CHECK(molora.groups[1].r == 8);
  CHECK_THROWS_AS(bench::parse_adapter_shapes("molora:2,3,4"), UsageError);
  CHECK_THROWS_AS(bench::parse_adapter_shapes("none,dora"), UsageError);
  CHECK_THROWS_AS(bench::parse_adapter_shapes("molora:8,2"), UsageError);
}

TEST_CASE("bench dense reference computes the sparse MoLoRA output with the same parameters") {
  torch::manual_seed(3);
  auto config = bench::model_shape("tiny");
  model::CausalLM lm(config, torch::TensorOptions().dtype(torch::kFloat64));
  lm->init_random();
  lm->eval();
  auto injected =
      adapt::inject_adapters(*lm, bench::adapter_config(bench::parse_adapter_shapes("molora")[0]));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : injected.parameters) p.normal_(0, 0.05);
  }
  auto ids = torch::randint(config.vocab_size, {2, 7}, torch::kInt64);
  torch::NoGradGuard no_grad;
  auto sparse = lm->forward(ids);
  const auto n_params = lm->parameters().size();
  CHECK(bench::set_dense_reference(*lm, true) == 3 * config.num_hidden_layers);
  CHECK(lm->parameters().size() == n_params);  // same tensors, nothing duplicated
  auto dense = lm->forward(ids);
  CHECK(torch::allclose(sparse, dense, 1e-5, 1e-6));
  CHECK(bench::set_dense_reference(*lm, false) == 3 * config.num_hidden_layers);
  CHECK(bench::set_dense_reference(*lm, false) == 0);
}

TEST_CASE("bench FLOP and byte counts follow the model and adapter sizes") {
  auto config = bench::model_shape("tiny");
  model::CausalLM lm(config, torch::TensorOptions().dtype(torch::kBFloat16));
  // Matmul parameters: everything but the embedding (tied head) and the norms and biases.
  int64_t matmul = 0;
  for (const auto& p : lm->named_parameters())
    if (p.value().dim() == 2 && p.key() != "model.embed_tokens.weight") matmul += p.value().numel();
  CHECK(bench::base_forward_flops_per_token(config) == doctest::Approx(2.0 * matmul));
  CHECK(bench::head_flops_per_token(config) == 2.0 * config.vocab_size * config.hidden_size);
  CHECK(bench::decode_weight_bytes(lm) == 2.0 * config.parameter_count());

  CHECK(bench::adapter_forward_flops_per_token(*lm) == 0);
  adapt::inject_adapters(*lm, bench::adapter_config(bench::parse_adapter_shapes("molora")[0]));
  const double d = config.hidden_size, i = config.intermediate_size;
  const double hd = config.head_size(), q = config.num_attention_heads * hd,
               kv = config.num_key_value_heads * hd;
  const double lora = 2 * 16 * ((d + q) * 2 + (d + kv) * 2);               // q, o, k, v
  const double molora = 3 * (2 * 2 * 16 * (d + i)) + 2 * 8 * (2 * d + i);  // experts + routers
  CHECK(bench::adapter_forward_flops_per_token(*lm) ==
        doctest::Approx(config.num_hidden_layers * (lora + molora)));
  bench::set_dense_reference(*lm, true);  // same useful work on the dense path
  CHECK(bench::adapter_forward_flops_per_token(*lm) ==
        doctest::Approx(config.num_hidden_layers * (lora + molora)));
}

TEST_CASE("ming-bench --json reports positive rates and limits for every configuration") {
  auto r = test::run_command(test::tool("ming-bench").string() +
                             " --shape tiny -p 8 -n 2 --train 16 --train-seq 8 --reps 2"
                             " --threads 1 --copy-mb 16 --reference both --json -q");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto j = nlohmann::json::parse(r.out);
  CHECK(j["model"] == "tiny");
  CHECK(j["limits"]["gemm_bf16_tflops"].get<double>() > 0);
  CHECK(j["limits"]["gemm_fp32_tflops"].get<double>() > 0);
  CHECK(j["limits"]["copy_bandwidth_gbs"].get<double>() > 0);
  REQUIRE(j["rows"].size() == 4);  // none, lora, molora sparse, molora dense
  CHECK(j["rows"][0]["adapter"] == "none");
  CHECK(j["rows"][2]["mixture"] == "sparse");
  CHECK(j["rows"][3]["mixture"] == "dense");
  for (const auto& row : j["rows"]) {
    INFO(row.dump());
    for (const char* key : {"prefill_tokens_per_second", "decode_tokens_per_second"}) {
      CHECK(row[key]["best"].get<double>() > 0);
      CHECK(row[key]["reps"].size() == 2);
    }
    CHECK(row["prefill_mfu"].get<double>() > 0);
    CHECK(row["decode_bound_fraction"].get<double>() > 0);
    if (row["adapter"] == "none") {
      CHECK(row["train_tokens_per_second"].is_null());  // nothing to train
      continue;
    }
    CHECK(row["trainable_parameters"].get<int64_t>() > 0);
    CHECK(row["train_tokens_per_second"]["best"].get<double>() > 0);
    CHECK(row["train_mfu"].get<double>() > 0);
    CHECK(row["prefill_time_vs_base"].get<double>() > 0);
    CHECK(row["decode_time_vs_base"].get<double>() > 0);
  }
  CHECK(j["rows"][3]["train_time_vs_sparse"].get<double>() > 0);
}

TEST_CASE("ming-bench rejects bad flags with exit status 2") {
  const auto bin = test::tool("ming-bench").string();
  // Each case exits during flag checking, before any model is built; one per kind of check.
  for (const char* args : {"--shape nope", "--shape tiny --adapter-shape molora:2,3,4",
                           "--shape tiny --train 30 --train-seq 16", "--shape tiny --bogus"}) {
    auto r = test::run_command(bin + " " + args);
    INFO(args, " -> ", r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("error") != std::string::npos);
  }
}

}  // namespace
