// The decoder against an independent reference, KV-cache and batching equivalences, loading and
// its errors, and training through the model.
#include <cmath>

#include <doctest/doctest.h>
#include <torch/torch.h>

#include "ming/core/error.h"
#include "ming/io/json.h"
#include "ming/io/safetensors.h"
#include "ming/model/config.h"
#include "ming/model/load.h"
#include "ming/model/transformer.h"
#include "support.h"

using namespace ming;
using ming::model::ModelConfig;
namespace fs = std::filesystem;

namespace {

ModelConfig qwen2_tiny() {
  ModelConfig c;
  c.model_type = "qwen2";
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;  // GQA
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 1000000.0;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = true;
  c.qkv_bias = true;
  return c;
}

ModelConfig llama3_tiny() {
  ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = 61;
  c.hidden_size = 48;
  c.intermediate_size = 40;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 3;
  c.num_key_value_heads = 1;
  c.head_dim = 16;  // explicit head_dim
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  model::RopeScaling s;
  s.factor = 4.0;
  s.low_freq_factor = 1.0;
  s.high_freq_factor = 4.0;
  s.original_max_position_embeddings = 16;  // small, so every RoPE regime occurs in head_dim 16
  c.rope_scaling = s;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = false;
  return c;
}

model::CausalLM random_model(const ModelConfig& c, torch::ScalarType dtype = torch::kFloat32,
                             uint64_t seed = 7) {
  torch::manual_seed(seed);
  model::CausalLM m(c, torch::TensorOptions().dtype(dtype));
  m->init_random(0.2);
  return m;
}

// ---- an independent reference: per-position, per-head loops in fp64 ----------------------------

// RoPE angle frequencies written out from the formulas (HF docs, LLaMA-3.1 paper), scalar maths.
std::vector<double> reference_frequencies(const ModelConfig& c) {
  const int64_t hd = c.head_size();
  std::vector<double> f(hd / 2);
  for (int64_t i = 0; i < hd / 2; ++i) {
    double inv = 1.0 / std::pow(c.rope_theta, 2.0 * i / hd);
    if (c.rope_scaling) {
      const auto& s = *c.rope_scaling;
      const double wavelen = 2 * M_PI / inv;
      const double low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
      const double high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
      if (wavelen > low_wavelen) {
        inv = inv / s.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) /
                              (s.high_freq_factor - s.low_freq_factor);
        inv = (1 - smooth) * inv / s.factor + smooth * inv;
      }
    }
    f[i] = inv;
  }
  return f;
}

// ids: one sequence; returns (T, V) fp64 logits.
torch::Tensor reference_forward(model::CausalLM& m, const std::vector<int64_t>& ids) {
  const ModelConfig& c = m->config();
  std::map<std::string, torch::Tensor> w;
  for (const auto& p : m->named_parameters()) w[p.key()] = p.value().detach().to(torch::kFloat64);
  const int64_t T = ids.size(), hd = c.head_size(), H = c.num_attention_heads,
                Hkv = c.num_key_value_heads;
  auto rms = [&](const torch::Tensor& x, const torch::Tensor& g) {
    return x / torch::sqrt(x.pow(2).mean(-1, true) + c.rms_norm_eps) * g;
  };
  auto linear = [&](const torch::Tensor& x, const std::string& name) {
    auto y = torch::matmul(x, w[name + ".weight"].t());
    if (w.count(name + ".bias")) y = y + w[name + ".bias"];
    return y;
  };
  const auto freqs = reference_frequencies(c);
  // Rotate one head vector at position t: pairs (i, i + hd/2) as in HF's rotate-half layout.
  auto rope = [&](torch::Tensor v, int64_t t) {
    auto out = v.clone();
    for (int64_t i = 0; i < hd / 2; ++i) {
      const double a = t * freqs[i], x0 = v[i].item<double>(), x1 = v[i + hd / 2].item<double>();
      out[i] = x0 * std::cos(a) - x1 * std::sin(a);
      out[i + hd / 2] = x1 * std::cos(a) + x0 * std::sin(a);
    }
    return out;
  };
  auto x =
      w["model.embed_tokens.weight"].index_select(0, torch::tensor(ids, torch::kInt64));  // (T, D)
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    auto xn = rms(x, w[p + "input_layernorm.weight"]);
    auto q = linear(xn, p + "self_attn.q_proj"), k = linear(xn, p + "self_attn.k_proj"),
         v = linear(xn, p + "self_attn.v_proj");
    auto attn = torch::zeros({T, H * hd}, torch::kFloat64);
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / Hkv);  // the kv head this query head reads
      for (int64_t t = 0; t < T; ++t) {
        auto qv = rope(q[t].narrow(0, h * hd, hd), t);
        std::vector<double> scores;
        for (int64_t s = 0; s <= t; ++s) {
          auto kv = rope(k[s].narrow(0, g * hd, hd), s);
          scores.push_back(qv.dot(kv).item<double>() / std::sqrt(double(hd)));
        }
        double mx = *std::max_element(scores.begin(), scores.end()), z = 0;
        for (auto& s : scores) z += (s = std::exp(s - mx));
        auto o = torch::zeros({hd}, torch::kFloat64);
        for (int64_t s = 0; s <= t; ++s) o += scores[s] / z * v[s].narrow(0, g * hd, hd);
        attn[t].narrow(0, h * hd, hd).copy_(o);
      }
    }
    x = x + linear(attn, p + "self_attn.o_proj");
    auto xm = rms(x, w[p + "post_attention_layernorm.weight"]);
    auto gate = linear(xm, p + "mlp.gate_proj");
    auto act = gate / (1 + torch::exp(-gate)) * linear(xm, p + "mlp.up_proj");
    x = x + linear(act, p + "mlp.down_proj");
  }
  x = rms(x, w["model.norm.weight"]);
  const auto& head = c.tie_word_embeddings ? w["model.embed_tokens.weight"] : w["lm_head.weight"];
  return torch::matmul(x, head.t());
}

torch::Tensor ids_tensor(const std::vector<int64_t>& ids) {
  return torch::tensor(ids, torch::kInt64).view({1, -1});
}

void save_tiny(const fs::path& dir, const ModelConfig& c, model::CausalLM& m) {
  model::save_model(dir, c, m);
}

model::LoadOptions no_tokenizer(torch::ScalarType dtype = torch::kFloat32) {
  model::LoadOptions o;
  o.dtype = dtype;
  o.load_tokenizer = false;
  return o;
}

std::string usage_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const UsageError& e) {
    return e.what();
  }
  FAIL("expected a UsageError");
  return {};
}

}  // namespace

TEST_CASE("model: Qwen2-shaped checkpoint (qkv bias, GQA, tied) matches the reference") {
  test::TempDir tmp;
  auto c = qwen2_tiny();
  auto m = random_model(c);
  save_tiny(tmp / "qwen", c, m);
  CHECK(fs::exists(tmp / "qwen" / "config.json"));
  CHECK(fs::exists(tmp / "qwen" / "generation_config.json"));
  auto loaded = model::load_model(tmp / "qwen", no_tokenizer());
  CHECK(loaded.config.model_type == "qwen2");
  CHECK(loaded.config.tie_word_embeddings);
  CHECK_FALSE(loaded.model->lm_head);
  const std::vector<int64_t> ids = {5, 17, 3, 96, 42, 0, 8, 11, 64};
  torch::NoGradGuard ng;
  auto got = loaded.model->forward(ids_tensor(ids))[0].to(torch::kFloat64);
  auto want = reference_forward(loaded.model, ids);
  CHECK(got.sizes() == want.sizes());
  CHECK((got - want).abs().max().item<double>() < 1e-4 * (1 + want.abs().max().item<double>()));
}

TEST_CASE("model: LLaMA-shaped checkpoint with llama3 rope_scaling matches the reference") {
  test::TempDir tmp;
  auto c = llama3_tiny();
  auto m = random_model(c, torch::kFloat32, 11);
  save_tiny(tmp / "llama", c, m);
  auto loaded = model::load_model(tmp / "llama", no_tokenizer());
  REQUIRE(loaded.config.rope_scaling);
  CHECK(loaded.config.rope_scaling->original_max_position_embeddings == 16);
  CHECK(loaded.model->lm_head);
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < 24; ++i) ids.push_back((i * 7 + 3) % c.vocab_size);
  torch::NoGradGuard ng;
  auto got = loaded.model->forward(ids_tensor(ids))[0].to(torch::kFloat64);
  auto want = reference_forward(loaded.model, ids);
  CHECK((got - want).abs().max().item<double>() < 1e-4 * (1 + want.abs().max().item<double>()));
  // The scaling matters: without it the same weights give other logits.
  auto plain = c;
  plain.rope_scaling.reset();
  model::CausalLM unscaled(plain, torch::TensorOptions().dtype(torch::kFloat32));
  {
    auto src = loaded.model->named_parameters();
    for (auto& p : unscaled->named_parameters()) p.value().set_data(src[p.key()].clone());
  }
  auto other = unscaled->forward(ids_tensor(ids))[0].to(torch::kFloat64);
  CHECK((other - want).abs().max().item<double>() > 1e-3);
}

TEST_CASE("model: KV-cache decode gives the same logits as the full forward") {
  auto c = qwen2_tiny();
  auto m = random_model(c);
  torch::NoGradGuard ng;
  std::vector<int64_t> ids = {1, 9, 33, 4, 70, 12, 55, 2, 19, 80};
  auto full = m->forward(ids_tensor(ids));  // (1, T, V)
  auto cache = m->new_cache(1, 16);
  model::ForwardOptions fo;
  fo.cache = &cache;
  fo.output = model::ForwardOutput::logits_last;
  // Prefill 4 tokens, then one at a time.
  auto first = m->forward(ids_tensor({ids.begin(), ids.begin() + 4}), fo);
  CHECK(torch::allclose(first[0][0], full[0][3], 1e-5, 1e-5));
  for (size_t t = 4; t < ids.size(); ++t) {
    auto step = m->forward(ids_tensor({ids[t]}), fo);
    CHECK(cache.length == static_cast<int64_t>(t + 1));
    CHECK(torch::allclose(step[0][0], full[0][t], 1e-5, 1e-5));
  }
  // Past the capacity is a clear error, not a crash.
  auto small = m->new_cache(1, 2);
  fo.cache = &small;
  CHECK_THROWS_AS(m->forward(ids_tensor(ids), fo), ming::Error);
}

TEST_CASE("model: left-padded batch gives the same logits as each sequence alone") {
  auto c = llama3_tiny();
  auto m = random_model(c, torch::kFloat32, 3);
  torch::NoGradGuard ng;
  std::vector<std::vector<int64_t>> seqs = {{4, 8, 15, 16, 23, 42}, {7, 1}, {30, 31, 32, 33}};
  const int64_t T = 6;
  auto ids = torch::zeros({3, T}, torch::kInt64);
  auto mask = torch::zeros({3, T}, torch::kInt64);
  for (int64_t b = 0; b < 3; ++b) {
    const int64_t L = seqs[b].size();
    ids[b].narrow(0, T - L, L).copy_(torch::tensor(seqs[b], torch::kInt64));
    mask[b].narrow(0, T - L, L).fill_(1);
  }
  model::ForwardOptions fo;
  fo.attention_mask = mask;
  auto batched = m->forward(ids, fo);  // (3, T, V)
  CHECK_FALSE(batched.isnan().any().item<bool>());
  for (int64_t b = 0; b < 3; ++b) {
    const int64_t L = seqs[b].size();
    auto alone = m->forward(ids_tensor(seqs[b]))[0];
    CHECK(torch::allclose(batched[b].narrow(0, T - L, L), alone, 1e-5, 1e-5));
  }
  // And the same through the cache: batched prefill, then a batched decode step.
  auto cache = m->new_cache(3, T + 1);
  model::ForwardOptions pf;
  pf.cache = &cache;
  pf.attention_mask = mask;
  pf.output = model::ForwardOutput::logits_last;
  m->forward(ids, pf);
  pf.attention_mask = torch::cat({mask, torch::ones({3, 1}, torch::kInt64)}, 1);
  auto next = torch::tensor({5, 6, 7}, torch::kInt64).view({3, 1});
  auto step = m->forward(next, pf);
  for (int64_t b = 0; b < 3; ++b) {
    auto seq = seqs[b];
    seq.push_back(5 + b);
    auto alone = m->forward(ids_tensor(seq))[0];
    CHECK(torch::allclose(step[b][0], alone[seq.size() - 1], 1e-5, 1e-5));
  }
}

TEST_CASE("model: bf16 forward stays close to fp32") {
  auto c = qwen2_tiny();
  auto m32 = random_model(c, torch::kFloat32, 5);
  auto m16 = random_model(c, torch::kBFloat16, 5);
  {
    torch::NoGradGuard ng;
    auto src = m32->named_parameters();
    for (auto& p : m16->named_parameters()) p.value().copy_(src[p.key()]);
  }
  std::vector<int64_t> ids = {3, 1, 4, 1, 5, 9, 2, 6};
  torch::NoGradGuard ng;
  auto a = m32->forward(ids_tensor(ids));
  auto b = m16->forward(ids_tensor(ids));
  CHECK((b.scalar_type() == torch::kBFloat16));
  CHECK((a - b.to(torch::kFloat32)).abs().max().item<double>() <
        0.05 * (1 + a.abs().max().item<double>()));
}

TEST_CASE("model: full fine-tuning and frozen-base adapters both get gradients") {
  auto c = qwen2_tiny();
  auto m = random_model(c);
  std::vector<int64_t> ids = {3, 1, 4, 1, 5, 9};
  auto loss_of = [&] {
    auto logits = m->forward(ids_tensor(ids));
    return torch::nn::functional::cross_entropy(logits[0].narrow(0, 0, 5),
                                                torch::tensor({1, 4, 1, 5, 9}, torch::kInt64));
  };
  // Full: every base weight trainable.
  m->set_trainable(true);
  loss_of().backward();
  for (const auto& p : m->named_parameters()) {
    INFO(p.key());
    REQUIRE(p.value().grad().defined());
    CHECK(p.value().grad().abs().sum().item<double>() > 0);
  }
  // Frozen base + an adapter on one projection: gradients flow through the frozen layers above it.
  struct Scale : model::ProjectionAdapter {
    torch::Tensor s;
    Scale() { s = register_parameter("s", torch::ones({1})); }
    torch::Tensor forward(const torch::Tensor&, const torch::Tensor& base) override {
      return base * s;
    }
  };
  m->set_trainable(false);
  for (auto& p : m->parameters()) p.mutable_grad() = torch::Tensor();
  auto adapter = std::make_shared<Scale>();
  m->model->layers[0]->mlp->down_proj->set_adapter(adapter);
  CHECK(m->named_parameters().contains("model.layers.0.mlp.down_proj.adapter.s"));
  loss_of().backward();
  REQUIRE(adapter->s.grad().defined());
  CHECK(adapter->s.grad().abs().item<double>() > 0);
  CHECK_FALSE(m->model->layers[1]->self_attn->q_proj->weight.grad().defined());
  CHECK(m->projections().size() == 7 * 2);  // tied: no lm_head projection
  CHECK(m->projections()[6]->name() == "model.layers.0.mlp.down_proj");
}

TEST_CASE("model: config.json round trip and unsupported settings name the key") {
  for (const auto& c : {qwen2_tiny(), llama3_tiny()}) {
    auto back = ModelConfig::from_json(c.to_json(), "config.json");
    CHECK(back.to_json() == c.to_json());
    CHECK(back.qkv_bias == c.qkv_bias);
    CHECK(back.head_size() == c.head_size());
  }
  auto j = qwen2_tiny().to_json();
  j["eos_token_id"] = {151643, 151645};
  CHECK(ModelConfig::from_json(j, "config.json").eos_token_ids.size() == 2);

  auto bad = qwen2_tiny().to_json();
  bad["model_type"] = "gpt2";
  bad.erase("architectures");
  auto msg = usage_error([&] { ModelConfig::from_json(bad, "m/config.json"); });
  CHECK(msg.find("m/config.json") != std::string::npos);
  CHECK(msg.find("model_type") != std::string::npos);
  CHECK(msg.find("gpt2") != std::string::npos);

  auto arch = llama3_tiny().to_json();
  arch["architectures"] = {"GPTNeoXForCausalLM"};
  CHECK(usage_error([&] { ModelConfig::from_json(arch, "config.json"); }).find("architectures") !=
        std::string::npos);
  auto rope = llama3_tiny().to_json();
  rope["rope_scaling"] = {{"type", "proportional"}, {"factor", 4.0}};
  CHECK(usage_error([&] { ModelConfig::from_json(rope, "config.json"); }).find("rope_scaling") !=
        std::string::npos);
  auto act = llama3_tiny().to_json();
  act["hidden_act"] = "gelu";
  CHECK(usage_error([&] { ModelConfig::from_json(act, "config.json"); }).find("hidden_act") !=
        std::string::npos);
  auto heads = llama3_tiny().to_json();
  heads["num_key_value_heads"] = 2;
  CHECK(usage_error([&] {
          ModelConfig::from_json(heads, "config.json");
        }).find("num_key_value_heads") != std::string::npos);
  auto missing = llama3_tiny().to_json();
  missing.erase("hidden_size");
  CHECK(usage_error([&] { ModelConfig::from_json(missing, "config.json"); }).find("hidden_size") !=
        std::string::npos);
}

TEST_CASE("model: a config that does not match the tensors is refused, naming tensor and shapes") {
  test::TempDir tmp;
  auto c = qwen2_tiny();
  auto m = random_model(c);
  save_tiny(tmp / "m", c, m);

  SUBCASE("wrong shape") {
    auto j = io::read_json(tmp / "m" / "config.json");
    j["intermediate_size"] = 50;
    io::write_json(tmp / "m" / "config.json", j);
    auto msg = usage_error([&] { model::load_model(tmp / "m", no_tokenizer()); });
    CHECK(msg.find("model.layers.0.mlp.gate_proj.weight") != std::string::npos);
    CHECK(msg.find("[48, 32]") != std::string::npos);
    CHECK(msg.find("[50, 32]") != std::string::npos);
    CHECK(msg.find("model.safetensors") != std::string::npos);
  }
  SUBCASE("missing tensor (config says untied)") {
    auto j = io::read_json(tmp / "m" / "config.json");
    j["tie_word_embeddings"] = false;
    io::write_json(tmp / "m" / "config.json", j);
    auto msg = usage_error([&] { model::load_model(tmp / "m", no_tokenizer()); });
    CHECK(msg.find("lm_head.weight") != std::string::npos);
  }
  SUBCASE("unexpected tensor (config has fewer layers)") {
    auto j = io::read_json(tmp / "m" / "config.json");
    j["num_hidden_layers"] = 1;
    io::write_json(tmp / "m" / "config.json", j);
    auto msg = usage_error([&] { model::load_model(tmp / "m", no_tokenizer()); });
    CHECK(msg.find("unexpected tensor 'model.layers.1.") != std::string::npos);
  }
  SUBCASE("unknown architecture") {
    auto j = io::read_json(tmp / "m" / "config.json");
    j["model_type"] = "falcon";
    j.erase("architectures");
    io::write_json(tmp / "m" / "config.json", j);
    auto msg = usage_error([&] { model::load_model(tmp / "m", no_tokenizer()); });
    CHECK(msg.find("config.json") != std::string::npos);
    CHECK(msg.find("falcon") != std::string::npos);
  }
  SUBCASE("no config.json") {
    fs::remove(tmp / "m" / "config.json");
    CHECK(usage_error([&] { model::load_model(tmp / "m", no_tokenizer()); }).find("config.json") !=
          std::string::npos);
  }
}

TEST_CASE("model: save_model shards big checkpoints and loads them back in another dtype") {
  test::TempDir tmp;
  auto c = llama3_tiny();
  auto m = random_model(c);
  model::SaveOptions so;
  so.max_shard_bytes = 8000;  // forces several shards
  so.dtype = torch::kBFloat16;
  model::save_model(tmp / "sharded", c, m, so);
  CHECK(fs::exists(tmp / "sharded" / "model.safetensors.index.json"));
  CHECK_FALSE(fs::exists(tmp / "sharded" / "model.safetensors"));
  CHECK(io::read_json(tmp / "sharded" / "config.json")["torch_dtype"] == "bfloat16");
  model::LoadOptions lo;
  lo.load_tokenizer = false;  // dtype from config.json: bf16
  auto loaded = model::load_model(tmp / "sharded", lo);
  CHECK((loaded.model->dtype() == torch::kBFloat16));
  auto src = m->named_parameters();
  for (const auto& p : loaded.model->named_parameters())
    CHECK(torch::equal(p.value(), src[p.key()].to(torch::kBFloat16)));
  // Removing a shard is reported naming the missing file.
  std::vector<fs::path> shards;
  for (const auto& e : fs::directory_iterator(tmp / "sharded"))
    if (e.path().filename().string().rfind("model-", 0) == 0) shards.push_back(e.path());
  REQUIRE(shards.size() > 1);
  std::sort(shards.begin(), shards.end());
  fs::remove(shards[1]);
  auto msg = usage_error([&] { model::load_model(tmp / "sharded", lo); });
  CHECK(msg.find(shards[1].filename().string()) != std::string::npos);
  CHECK(msg.find("missing") != std::string::npos);
}

TEST_CASE("model: transformers 5 rope_parameters give the same config as rope_theta/rope_scaling") {
  for (const auto& c : {qwen2_tiny(), llama3_tiny()}) {
    auto v4 = c.to_json();
    auto v5 = v4;
    nlohmann::json rope = {{"rope_type", "default"}, {"rope_theta", v4["rope_theta"]}};
    if (v4.contains("rope_scaling")) {
      rope = v4["rope_scaling"];
      rope["rope_theta"] = v4["rope_theta"];
    }
    v5.erase("rope_theta");
    v5.erase("rope_scaling");
    v5["rope_parameters"] = rope;
    CHECK(ModelConfig::from_json(v5, "config.json").to_json() ==
          ModelConfig::from_json(v4, "config.json").to_json());
  }
  auto unknown = qwen2_tiny().to_json();
  unknown["rope_parameters"] = {
      {"rope_type", "proportional"}, {"rope_theta", 1e6}, {"factor", 4.0}};
  CHECK(usage_error([&] {
          ModelConfig::from_json(unknown, "config.json");
        }).find("rope_parameters") != std::string::npos);
}
