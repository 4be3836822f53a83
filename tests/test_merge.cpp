// ming-merge merge: exact folding of plain LoRA, MoLoRA experts kept beside the merged model or
// folded by expected gate weight, the output folder's faithfulness to the base, and bad inputs.
#include <doctest/doctest.h>

#include <cmath>

#include <torch/torch.h>

#include "ming/adapt/merge.h"
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

AdapterConfig attention_lora() {
  return AdapterConfig::lora({"q_proj", "k_proj", "v_proj", "o_proj"}, /*r=*/4, /*alpha=*/8.0,
                             /*dropout=*/0.05);
}

// MING-MOE's layout at toy size: attention LoRA r4 + MLP MoLoRA with 4 experts, top-2.
AdapterConfig small_molora(bool shared_expert = false) {
  AdapterConfig c;
  c.groups[0].r = 4;
  c.groups[0].alpha = 8;
  c.groups[1].experts = 4;
  c.groups[1].top_k = 2;
  c.groups[1].r = 4;
  c.groups[1].alpha = 8;
  c.groups[1].shared_expert = shared_expert;
  return c;
}

double max_abs(const torch::Tensor& t) {
  return t.abs().max().item<double>();
}

MergeOptions merge_options(const TempDir& tmp) {
  MergeOptions o;
  o.base = tmp / "base";
  o.adapter = tmp / "adapter";
  o.output = tmp / "merged";
  return o;
}

}  // namespace

TEST_CASE("merge: folded LoRA gives the logits of base + unmerged adapter (fp32)") {
  TempDir tmp("ming-merge");
  test::write_tiny_base(tmp / "base", torch::kFloat32);
  auto cfg = AdapterConfig::lora(
      {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}, 4, 8.0);
  test::write_random_adapter(tmp / "base", tmp / "adapter", cfg);
  const auto report = merge(merge_options(tmp));
  CHECK(report.n_lora_merged == 14);
  CHECK(report.n_molora_kept == 0);
  CHECK_FALSE(fs::exists(tmp / "merged" / "experts-adapter"));

  auto base = test::tiny_logits(tmp / "base", std::nullopt);
  auto reference = test::tiny_logits(tmp / "base", tmp / "adapter");
  auto merged = test::tiny_logits(tmp / "merged", std::nullopt);
  REQUIRE(max_abs(reference - base) > 1e-2);  // the adapter does change the model
  CHECK(max_abs(merged - reference) < 2e-5);
}

TEST_CASE("merge: folded LoRA in a bf16 base stays within bf16 rounding of base + adapter") {
  TempDir tmp("ming-merge");
  test::write_tiny_base(tmp / "base", torch::kBFloat16);
  test::write_random_adapter(tmp / "base", tmp / "adapter", attention_lora());
  merge(merge_options(tmp));

  // The exact function (bf16-stored base weights + adapter) in fp64, against which both the
  // bf16 unmerged run and the bf16 merged run are measured.
  auto exact = test::tiny_logits(tmp / "base", tmp / "adapter", torch::kFloat64);
  auto base_exact = test::tiny_logits(tmp / "base", std::nullopt, torch::kFloat64);
  auto unmerged = test::tiny_logits(tmp / "base", tmp / "adapter");
  auto merged = test::tiny_logits(tmp / "merged", std::nullopt);
  CHECK(io::read_json(tmp / "merged" / "config.json")["torch_dtype"] == "bfloat16");
  const double rounding = max_abs(unmerged - exact);  // what bf16 compute costs anyway
  const double err = max_abs(merged - exact);
  MESSAGE("bf16: unmerged error " << rounding << ", merged error " << err << ", adapter effect "
                                  << max_abs(exact - base_exact));
  REQUIRE(max_abs(exact - base_exact) > 20 * rounding);
  CHECK(err < 3 * rounding + 1e-3);
}

TEST_CASE("merge: output folder has exactly the base's tensor names, shapes, dtypes and config") {
  TempDir tmp("ming-merge");
  test::write_tiny_base(tmp / "base", torch::kBFloat16);
  test::write_random_adapter(tmp / "base", tmp / "adapter", small_molora());
  // Fields ming does not model must survive too.
  auto config = io::read_json(tmp / "base" / "config.json");
  config["transformers_version"] = "4.40.0";
  config["use_cache"] = true;
  io::write_json(tmp / "base" / "config.json", config);
  merge(merge_options(tmp));

  auto base = io::TensorStore::open(tmp / "base");
  auto merged = io::TensorStore::open(tmp / "merged");
  REQUIRE(base.names() == merged.names());
  for (const auto& name : base.names()) {
    CHECK(base.info(name).shape == merged.info(name).shape);
    CHECK((base.info(name).dtype == merged.info(name).dtype));
  }
  CHECK(io::read_json(tmp / "merged" / "config.json") == config);
  for (const char* f : {"tokenizer.bin", "generation_config.json"})
    CHECK(fs::exists(tmp / "merged" / f));
  // The loader accepts it as a plain model (no adapter or extra tensors).
  model::LoadOptions load;
  load.load_tokenizer = true;
  auto loaded = model::load_model(tmp / "merged", load);
  CHECK(loaded.config.hidden_size == 32);
  CHECK(loaded.tokenizer);
}

TEST_CASE("merge: MoLoRA experts stay as an adapter that reproduces base + adapter exactly") {
  TempDir tmp("ming-merge");
  test::write_tiny_base(tmp / "base", torch::kFloat32);
  test::write_random_adapter(tmp / "base", tmp / "adapter", small_molora(/*shared_expert=*/true));
  const auto report = merge(merge_options(tmp));
  CHECK(report.n_lora_merged == 8);
  CHECK(report.n_molora_kept == 6);
  REQUIRE(report.experts_adapter);
  const fs::path experts = tmp / "merged" / "experts-adapter";
  CHECK(*report.experts_adapter == experts);

  // Only the MoLoRA groups are in the side adapter.
  auto side = io::read_json(experts / "adapter_config.json");
  CHECK(side["target_modules"].empty());
  REQUIRE(side["moe"]["groups"].size() == 1);
  CHECK(side["moe"]["groups"][0]["experts"] == 4);
  for (const auto& name : io::TensorStore::open(experts / "adapter_model.safetensors").names())
    CHECK(name.find("self_attn") == std::string::npos);

  auto reference = test::tiny_logits(tmp / "base", tmp / "adapter");
  auto with_experts = test::tiny_logits(tmp / "merged", experts);
  auto without = test::tiny_logits(tmp / "merged", std::nullopt);
  CHECK(max_abs(with_experts - reference) < 2e-5);
  CHECK(max_abs(without - reference) > 1e-3);  // the experts matter: the side adapter is needed
}

TEST_CASE("merge: molora_dense_delta is s * sum_e p_e B_e A_e plus the shared expert") {
  torch::manual_seed(3);
  MoloraOptions mo;
  mo.experts = 3;
  mo.top_k = 2;
  mo.r = 2;
  mo.alpha = 6;
  mo.shared_expert = true;
  MoloraAdapter a(5, 4, mo);
  {
    torch::NoGradGuard g;
    for (auto p : a.parameters()) p.normal_();
  }
  const std::vector<double> p = {0.5, 0.2, 0.3};
  auto expected = torch::mm(a.shared_B, a.shared_A);
  for (int e = 0; e < 3; ++e) expected = expected + p[e] * torch::mm(a.lora_B[e], a.lora_A[e]);
  expected = expected * 3.0;  // s = 6 / 2
  CHECK(torch::allclose(molora_dense_delta(a, p), expected, 1e-5, 1e-6));
  CHECK_THROWS_AS(molora_dense_delta(a, {0.5, 0.5}), UsageError);
}

TEST_CASE("merge --experts-to-dense: folds experts by measured expected gate, or uniformly") {
  TempDir tmp("ming-merge");
  test::write_tiny_base(tmp / "base", torch::kFloat32);
  test::write_random_adapter(tmp / "base", tmp / "adapter", small_molora());
  // ming-route-stats' route_stats.json: per expert topk_share and mean_gate (the mean over its
  // own assignments), so E[g_e] = k * topk_share_e * mean_gate_e.
  io::Json stats = {{"format", "ming-route-stats"}, {"version", 1}, {"layers", io::Json::array()}};
  std::map<std::string, std::vector<double>> p;
  for (int l = 0; l < 2; ++l)
    for (const char* proj : {"gate_proj", "up_proj", "down_proj"}) {
      const std::string name = fmt::format("model.layers.{}.mlp.{}", l, proj);
      const std::vector<double> share = {0.1, 0.2, 0.3, 0.4};
      const std::vector<double> mean_gate = {0.5 + 0.1 * l, 0.5, 0.5, 0.5};
      io::Json experts = io::Json::array();
      double sum = 0;
      for (int e = 0; e < 4; ++e) {
        experts.push_back({{"expert", e},
                           {"top1_share", 0.25},
                           {"topk_share", share[e]},
                           {"mean_gate", mean_gate[e]},
                           {"dead", false}});
        p[name].push_back(2 * share[e] * mean_gate[e]);
        sum += p[name].back();
      }
      for (auto& v : p[name]) v /= sum;  // layer 1's rows do not sum to 1: merge normalises
      stats["layers"].push_back(
          {{"name", name}, {"experts", 4}, {"top_k", 2}, {"expert_stats", experts}});
    }
  io::write_json(tmp / "route_stats.json", stats);

  auto o = merge_options(tmp);
  o.experts_to_dense = ExpertsToDense::usage;
  o.route_stats = tmp / "route_stats.json";
  const auto report = merge(o);
  CHECK(report.n_molora_densified == 6);
  CHECK_FALSE(fs::exists(tmp / "merged" / "experts-adapter"));

  // W' of every MLP projection is W + s sum_e E[g_e] B_e A_e.
  model::LoadOptions load;
  load.load_tokenizer = false;
  auto base = model::load_model(tmp / "base", load);
  auto adapter = load_adapter(*base.model, tmp / "adapter");
  auto merged = model::load_model(tmp / "merged", load);
  auto merged_projs = merged.model->projections();
  int checked = 0;
  for (auto& proj : base.model->projections()) {
    auto moe = std::dynamic_pointer_cast<MoloraAdapter>(proj->adapter());
    if (!moe) continue;
    auto expected = proj->weight + molora_dense_delta(*moe, p.at(proj->name()));
    for (auto& mp : merged_projs)
      if (mp->name() == proj->name()) {
        CHECK(torch::allclose(mp->weight, expected, 1e-5, 1e-6));
        ++checked;
      }
  }
  CHECK(checked == 6);

  // Uniform: p_e = 1/E, no statistics needed.
  o.experts_to_dense = ExpertsToDense::uniform;
  o.route_stats.clear();
  o.output = tmp / "uniform";
  merge(o);
  auto uniform = model::load_model(tmp / "uniform", load);
  auto mlp = base.model->model->layers[1]->mlp->up_proj;
  auto moe = std::dynamic_pointer_cast<MoloraAdapter>(mlp->adapter());
  CHECK(torch::allclose(uniform.model->model->layers[1]->mlp->up_proj->weight,
                        mlp->weight + molora_dense_delta(*moe, {0.25, 0.25, 0.25, 0.25}), 1e-5,
                        1e-6));
}

TEST_CASE("merge --eval-data: reports perplexity of base + adapter and of the merged model") {
  TempDir tmp("ming-merge");
  test::write_tiny_base(tmp / "base", torch::kFloat32);
  test::write_random_adapter(tmp / "base", tmp / "adapter", small_molora(), 11, 0.3);
  test::write_text(tmp / "eval.jsonl",
                   "{\"text\": \"Once upon a time, there was a little girl named Lily.\"}\n"
                   "{\"text\": \"She liked to play in the park with her dog.\"}\n");
  auto o = merge_options(tmp);
  o.eval_data = tmp / "eval.jsonl";
  // Experts kept: the merged model + side adapter is the same function, so perplexity matches.
  auto kept = merge(o);
  REQUIRE(kept.ppl_adapter);
  REQUIRE(kept.ppl_merged);
  CHECK(kept.eval_tokens > 10);
  CHECK(*kept.ppl_adapter > 1.0);
  CHECK(*kept.ppl_merged == doctest::Approx(*kept.ppl_adapter).epsilon(1e-5));
  // Folded uniformly: an approximation, so perplexity moves.
  o.experts_to_dense = ExpertsToDense::uniform;
  o.output = tmp / "dense";
  auto dense = merge(o);
  CHECK(*dense.ppl_adapter == doctest::Approx(*kept.ppl_adapter).epsilon(1e-9));
  CHECK(std::abs(*dense.ppl_merged - *dense.ppl_adapter) > 1e-6);
}

TEST_CASE("read_route_usage: ming-route-stats' route_stats.json and the plain layout") {
  TempDir tmp("ming-merge");
  test::write_text(tmp / "a.json", R"({"format": "ming-route-stats", "version": 1, "layers": [
      {"name": "m.a", "experts": 2, "top_k": 2, "expert_stats": [
        {"expert": 1, "top1_share": 0.3, "topk_share": 0.4, "mean_gate": 0.25, "dead": false},
        {"expert": 0, "top1_share": 0.7, "topk_share": 0.6, "mean_gate": 0.6667, "dead": false}]}]})");
  auto a = read_route_usage(tmp / "a.json", UsageMeasure::topk_share);
  CHECK(a.layers.at("m.a") == std::vector<double>{0.6, 0.4});
  auto g = read_route_usage(tmp / "a.json", UsageMeasure::expected_gate).layers.at("m.a");
  CHECK(g[0] == doctest::Approx(2 * 0.6 * 0.6667));
  CHECK(g[1] == doctest::Approx(2 * 0.4 * 0.25));
  test::write_text(tmp / "c.json", R"({"m.c": [1, 0, 2]})");
  CHECK(read_route_usage(tmp / "c.json", UsageMeasure::expected_gate).layers.at("m.c").size() == 3);
  test::write_text(tmp / "d.json", R"({"m.d": [1, -1]})");
  CHECK_THROWS_AS(read_route_usage(tmp / "d.json", UsageMeasure::expected_gate), UsageError);
  test::write_text(tmp / "e.json", R"({"format": "ming-route-stats", "layers": [{"name": "x"}]})");
  CHECK_THROWS_WITH_AS(read_route_usage(tmp / "e.json", UsageMeasure::topk_share),
                       doctest::Contains("layers[0]"), UsageError);
  CHECK_THROWS_WITH_AS(read_route_usage(tmp / "missing.json", UsageMeasure::expected_gate),
                       doctest::Contains("does not exist"), UsageError);
}

TEST_CASE("ming-merge merge: bad inputs exit 2 with the reason and leave no output folder") {
  TempDir tmp("ming-merge");
  test::write_tiny_base(tmp / "base", torch::kFloat32);
  // An adapter trained on a model of another hidden size.
  auto wide = test::merge_tiny_qwen2();
  wide.hidden_size = 48;
  wide.num_attention_heads = 4;
  test::write_tiny_base(tmp / "wide", torch::kFloat32, wide);
  test::write_random_adapter(tmp / "wide", tmp / "wide-adapter", attention_lora());
  const std::string tool = test::tool("ming-merge").string();
  auto r = test::run_command(tool + " merge --base " + (tmp / "base").string() + " --adapter " +
                             (tmp / "wide-adapter").string() + " -o " + (tmp / "out").string());
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("wrong shape") != std::string::npos);
  CHECK(test::no_output_left(tmp / "out"));

  // --experts-to-dense usage with a route-stats file that does not exist: refused before any
  // model is loaded (checked in-process; the CLI maps UsageError to exit 2 as above).
  test::write_random_adapter(tmp / "base", tmp / "adapter", small_molora());
  MergeOptions o = merge_options(tmp);
  o.output = tmp / "out";
  o.experts_to_dense = ExpertsToDense::usage;
  o.route_stats = tmp / "nope.json";
  CHECK_THROWS_WITH_AS(merge(o), doctest::Contains("nope.json"), UsageError);
  CHECK(test::no_output_left(tmp / "out"));

  // Success through the CLI: the tool says the experts were kept.
  r = test::run_command(tool + " merge --base " + (tmp / "base").string() + " --adapter " +
                        (tmp / "adapter").string() + " -o " + (tmp / "out").string());
  CHECK(r.exit_code == 0);
  CHECK(io::Json::parse(r.out)["molora_kept"] == 6);
  CHECK(r.err.find("experts-adapter") != std::string::npos);
  CHECK(fs::exists(tmp / "out" / "experts-adapter" / "adapter_config.json"));
}
