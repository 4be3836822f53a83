// RoPE scaling (linear, dynamic, yarn, longrope, llama3) against an independent reference written
// from transformers' formulas (modeling_rope_utils.py): logits of small random LLaMA and Qwen2
// models at positions past the original context, fp32, and the refusal of unknown types.
#include <cmath>

#include <doctest/doctest.h>
#include <torch/torch.h>

#include "ming/core/error.h"
#include "ming/model/config.h"
#include "ming/model/transformer.h"

using ming::model::ModelConfig;
using ming::model::RopeScaling;

namespace {

constexpr int64_t kHeadDim = 16;

ModelConfig tiny(const std::string& model_type) {
  ModelConfig c;
  c.model_type = model_type;
  c.vocab_size = 53;
  c.hidden_size = 32;
  c.intermediate_size = 40;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = kHeadDim;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000.0;
  c.max_position_embeddings = 32;
  c.qkv_bias = model_type == "qwen2";
  c.tie_word_embeddings = model_type == "qwen2";
  return c;
}

// The frequencies of position t's rotation, and the factor cos/sin are multiplied by, for a
// forward over `seq_len` positions: transformers' formulas in scalar double maths.
struct Rotation {
  std::vector<double> inv_freq;
  double attention = 1.0;
};

Rotation reference_rotation(const ModelConfig& c, int64_t seq_len) {
  const double d = static_cast<double>(kHeadDim);
  Rotation r;
  double base = c.rope_theta;
  const RopeScaling* s = c.rope_scaling ? &*c.rope_scaling : nullptr;
  if (s && s->rope_type == "dynamic") {
    const double len = std::max<double>(seq_len, c.max_position_embeddings);
    base *= std::pow(s->factor * len / c.max_position_embeddings - (s->factor - 1), d / (d - 2));
  }
  // yarn: the ramp between the dimensions that rotate beta_fast and beta_slow times.
  double low = 0, high = 0;
  if (s && s->rope_type == "yarn") {
    const auto dim_of = [&](double rotations) {
      return d * std::log(s->original_max_position_embeddings / (rotations * 2 * M_PI)) /
             (2 * std::log(base));
    };
    low = std::max(std::floor(dim_of(s->beta_fast)), 0.0);
    high = std::min(std::ceil(dim_of(s->beta_slow)), d - 1);
    if (low == high) high += 0.001;
    r.attention = 0.1 * std::log(s->factor) + 1.0;
  }
  if (s && s->rope_type == "longrope")
    r.attention =
        std::sqrt(1 + std::log(s->factor) / std::log(s->original_max_position_embeddings));
  for (int64_t i = 0; i < kHeadDim / 2; ++i) {
    const double pos_freq = std::pow(base, 2.0 * i / d);
    double inv = 1.0 / pos_freq;
    if (!s) {
    } else if (s->rope_type == "linear") {
      inv /= s->factor;
    } else if (s->rope_type == "yarn") {
      const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
      const double extrapolation = 1 - ramp;
      inv = inv / s->factor * (1 - extrapolation) + inv * extrapolation;
    } else if (s->rope_type == "longrope") {
      const bool long_context = seq_len > s->original_max_position_embeddings;
      inv = 1.0 / ((long_context ? s->long_factor : s->short_factor)[i] * pos_freq);
    } else if (s->rope_type == "llama3") {
      const double wavelen = 2 * M_PI / inv;
      const double old_len = s->original_max_position_embeddings;
      if (wavelen > old_len / s->low_freq_factor) {
        inv /= s->factor;
      } else if (wavelen >= old_len / s->high_freq_factor) {
        const double smooth =
            (old_len / wavelen - s->low_freq_factor) / (s->high_freq_factor - s->low_freq_factor);
        inv = (1 - smooth) * inv / s->factor + smooth * inv;
      }
    }
    r.inv_freq.push_back(inv);
  }
  return r;
}

// A decoder forward in fp64 with explicit loops, rotating q and k with `rot`.
torch::Tensor reference_logits(ming::model::CausalLM& m, const std::vector<int64_t>& ids,
                               const Rotation& rot) {
  const ModelConfig& c = m->config();
  std::map<std::string, torch::Tensor> w;
  for (const auto& p : m->named_parameters()) w[p.key()] = p.value().detach().to(torch::kFloat64);
  const int64_t T = static_cast<int64_t>(ids.size()), hd = kHeadDim, H = c.num_attention_heads;
  const auto rms = [&](const torch::Tensor& x, const torch::Tensor& g) {
    return x / torch::sqrt(x.pow(2).mean(-1, true) + c.rms_norm_eps) * g;
  };
  const auto linear = [&](const torch::Tensor& x, const std::string& name) {
    auto y = torch::matmul(x, w[name + ".weight"].t());
    if (w.count(name + ".bias")) y = y + w[name + ".bias"];
    return y;
  };
  // Rotate-half layout: dimension i pairs with i + hd/2.
  const auto rope = [&](const torch::Tensor& v, int64_t t) {
    auto out = torch::empty_like(v);
    for (int64_t i = 0; i < hd / 2; ++i) {
      const double a = t * rot.inv_freq[i];
      const double cs = std::cos(a) * rot.attention, sn = std::sin(a) * rot.attention;
      const double x0 = v[i].item<double>(), x1 = v[i + hd / 2].item<double>();
      out[i] = x0 * cs - x1 * sn;
      out[i + hd / 2] = x1 * cs + x0 * sn;
    }
    return out;
  };
  auto x = w["model.embed_tokens.weight"].index_select(0, torch::tensor(ids, torch::kInt64));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const auto xn = rms(x, w[p + "input_layernorm.weight"]);
    const auto q = linear(xn, p + "self_attn.q_proj"), k = linear(xn, p + "self_attn.k_proj"),
               v = linear(xn, p + "self_attn.v_proj");
    std::vector<torch::Tensor> keys;
    for (int64_t s = 0; s < T; ++s) keys.push_back(rope(k[s].narrow(0, 0, hd), s));
    auto attn = torch::zeros({T, H * hd}, torch::kFloat64);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const auto qv = rope(q[t].narrow(0, h * hd, hd), t);
        std::vector<double> scores;
        for (int64_t s = 0; s <= t; ++s)
          scores.push_back(qv.dot(keys[s]).item<double>() / std::sqrt(double(hd)));
        const double mx = *std::max_element(scores.begin(), scores.end());
        double z = 0;
        for (auto& sc : scores) z += (sc = std::exp(sc - mx));
        auto o = torch::zeros({hd}, torch::kFloat64);
        for (int64_t s = 0; s <= t; ++s) o += scores[s] / z * v[s].narrow(0, 0, hd);
        attn[t].narrow(0, h * hd, hd).copy_(o);
      }
    x = x + linear(attn, p + "self_attn.o_proj");
    const auto xm = rms(x, w[p + "post_attention_layernorm.weight"]);
    const auto gate = linear(xm, p + "mlp.gate_proj");
    x = x +
        linear(gate / (1 + torch::exp(-gate)) * linear(xm, p + "mlp.up_proj"), p + "mlp.down_proj");
  }
  x = rms(x, w["model.norm.weight"]);
  return torch::matmul(
      x, (c.tie_word_embeddings ? w["model.embed_tokens.weight"] : w["lm_head.weight"]).t());
}

std::vector<int64_t> token_ids(int64_t n) {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back((i * 17 + 5) % 53);
  return ids;
}

// Max |ming - reference| over all logits of a forward over n tokens.
double max_diff(ming::model::CausalLM& m, int64_t n) {
  const auto ids = token_ids(n);
  torch::NoGradGuard no_grad;
  const auto got = m->forward(torch::tensor(ids, torch::kInt64).view({1, -1}))[0];
  const auto want = reference_logits(m, ids, reference_rotation(m->config(), n));
  return (got.to(torch::kFloat64) - want).abs().max().item<double>();
}

ming::model::CausalLM random_model(const ModelConfig& c) {
  torch::manual_seed(11);
  ming::model::CausalLM m(c, torch::TensorOptions().dtype(torch::kFloat32));
  m->init_random(0.2);
  return m;
}

ModelConfig with_scaling(const std::string& model_type, const nlohmann::json& rope_scaling) {
  auto j = tiny(model_type).to_json();
  j["rope_scaling"] = rope_scaling;
  return ModelConfig::from_json(j, "config.json");
}

}  // namespace

TEST_CASE(
    "rope scaling: each type's logits past the original context match transformers' formulas") {
  std::vector<double> short_factor, long_factor;
  for (int i = 0; i < kHeadDim / 2; ++i) {
    short_factor.push_back(1.0 + 0.05 * i);
    long_factor.push_back(1.0 + 0.9 * i);
  }
  const std::vector<std::pair<std::string, nlohmann::json>> cases = {
      {"llama", {{"type", "linear"}, {"factor", 2.0}}},
      {"qwen2", {{"rope_type", "dynamic"}, {"factor", 3.0}}},
      {"qwen2", {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 16}}},
      {"llama",
       {{"rope_type", "longrope"},
        {"original_max_position_embeddings", 16},
        {"short_factor", short_factor},
        {"long_factor", long_factor}}},
      {"llama",
       {{"rope_type", "llama3"},
        {"factor", 4.0},
        {"low_freq_factor", 1.0},
        {"high_freq_factor", 4.0},
        {"original_max_position_embeddings", 16}}},
  };
  for (const auto& [model_type, scaling] : cases) {
    const ModelConfig c = with_scaling(model_type, scaling);
    INFO(model_type << " " << scaling.dump());
    auto m = random_model(c);
    // 40 positions: past max_position_embeddings (32) and original_max_position_embeddings (16).
    CHECK(max_diff(m, 40) <= 1e-4);
  }
}

TEST_CASE("rope scaling: dynamic recomputes past max_position_embeddings and resets below it") {
  auto m = random_model(with_scaling("llama", {{"type", "dynamic"}, {"factor", 2.0}}));
  CHECK(max_diff(m, 48) <= 1e-4);  // the base grown for 48 positions
  CHECK(max_diff(m, 20) <= 1e-4);  // back to the unscaled frequencies
  CHECK(max_diff(m, 40) <= 1e-4);
}

TEST_CASE("rope scaling: longrope uses short factors within the original length, long past it") {
  std::vector<double> short_factor(kHeadDim / 2, 1.5), long_factor(kHeadDim / 2, 6.0);
  auto m = random_model(with_scaling("qwen2", {{"type", "longrope"},
                                               {"original_max_position_embeddings", 16},
                                               {"short_factor", short_factor},
                                               {"long_factor", long_factor}}));
  CHECK(max_diff(m, 12) <= 1e-4);
  CHECK(max_diff(m, 30) <= 1e-4);
  CHECK(max_diff(m, 12) <= 1e-4);
}

TEST_CASE("rope scaling: yarn's attention factor and DeepSeek mscale follow transformers") {
  auto yarn = [](nlohmann::json extra) {
    nlohmann::json s = {
        {"type", "yarn"}, {"factor", 8.0}, {"original_max_position_embeddings", 16}};
    if (!extra.is_null()) s.update(extra);
    return ming::model::rope_attention_factor(with_scaling("llama", s));
  };
  CHECK(yarn({}) == doctest::Approx(0.1 * std::log(8.0) + 1.0));
  CHECK(yarn({{"attention_factor", 0.7}}) == doctest::Approx(0.7));
  CHECK(yarn({{"mscale", 2.0}, {"mscale_all_dim", 1.0}}) ==
        doctest::Approx((0.2 * std::log(8.0) + 1.0) / (0.1 * std::log(8.0) + 1.0)));
}

TEST_CASE("rope scaling: unknown or incomplete rope_scaling is refused naming the key") {
  const auto error = [](const nlohmann::json& scaling) {
    try {
      with_scaling("llama", scaling);
    } catch (const ming::UsageError& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  CHECK(error({{"type", "su"}, {"factor", 2.0}}) ==
        "'config.json': key 'rope_scaling' has type 'su'; ming supports default, linear, dynamic, "
        "yarn, longrope and llama3");
  CHECK(error({{"type", "linear"}}).find("needs a 'factor'") != std::string::npos);
  CHECK(error({{"type", "longrope"}, {"short_factor", {1.0}}, {"long_factor", {1.0}}})
            .find("short_factor' must be a list of 8 numbers") != std::string::npos);
}
