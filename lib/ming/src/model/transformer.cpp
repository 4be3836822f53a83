#include "ming/model/transformer.h"

#include <cmath>
#include <limits>

#include "ming/core/error.h"
#include "ming/model/recompute.h"

namespace ming::model {

namespace F = torch::nn::functional;
using torch::indexing::Slice;

void KVCache::select_rows(const torch::Tensor& rows) {
  for (auto& k : keys) k = k.index_select(0, rows);
  for (auto& v : values) v = v.index_select(0, rows);
}

// ---- building blocks -------------------------------------------------------------------------

RMSNormImpl::RMSNormImpl(int64_t width, double eps_, const torch::TensorOptions& options)
    : eps(eps_) {
  weight = register_parameter("weight", torch::ones({width}, options), /*requires_grad=*/false);
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  // As HF's LlamaRMSNorm: normalise in fp32, round back to the input dtype, then scale.
  auto x32 = x.to(torch::kFloat32);
  auto normed = x32 * torch::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

EmbeddingImpl::EmbeddingImpl(int64_t vocab, int64_t width, const torch::TensorOptions& options) {
  weight = register_parameter("weight", torch::empty({vocab, width}, options), false);
}

torch::Tensor EmbeddingImpl::forward(const torch::Tensor& ids) {
  return torch::embedding(weight, ids);
}

namespace {
std::string layer_path(int64_t layer, const char* rest) {
  return fmt::format("model.layers.{}.{}", layer, rest);
}

// (..., hd) -> (..., hd): [-x2, x1] for halves x1, x2 (HF's rotate_half).
torch::Tensor rotate_half(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}
}  // namespace

AttentionImpl::AttentionImpl(const ModelConfig& c, int64_t layer, const torch::TensorOptions& o)
    : heads_(c.num_attention_heads), kv_heads_(c.num_key_value_heads), head_dim_(c.head_size()) {
  const int64_t d = c.hidden_size;
  q_proj = register_module("q_proj", Projection(layer_path(layer, "self_attn.q_proj"), d,
                                                heads_ * head_dim_, c.qkv_bias, o));
  k_proj = register_module("k_proj", Projection(layer_path(layer, "self_attn.k_proj"), d,
                                                kv_heads_ * head_dim_, c.qkv_bias, o));
  v_proj = register_module("v_proj", Projection(layer_path(layer, "self_attn.v_proj"), d,
                                                kv_heads_ * head_dim_, c.qkv_bias, o));
  o_proj = register_module("o_proj", Projection(layer_path(layer, "self_attn.o_proj"),
                                                heads_ * head_dim_, d, c.o_bias, o));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                     const torch::Tensor& sin, const torch::Tensor& allowed,
                                     KVCache* cache, int64_t layer) {
  const int64_t B = x.size(0), T = x.size(1);
  auto q = q_proj(x).view({B, T, heads_, head_dim_});     // (B, T, H, hd)
  auto k = k_proj(x).view({B, T, kv_heads_, head_dim_});  // (B, T, Hkv, hd)
  auto v = v_proj(x).view({B, T, kv_heads_, head_dim_});
  q = q * cos + rotate_half(q) * sin;
  k = k * cos + rotate_half(k) * sin;
  k = k.transpose(1, 2);  // (B, Hkv, T, hd)
  v = v.transpose(1, 2);
  if (cache) {
    const int64_t past = cache->length;
    cache->keys[layer].narrow(2, past, T).copy_(k);
    cache->values[layer].narrow(2, past, T).copy_(v);
    // Views over the filled part: (B, Hkv, past+T, hd), rows strided by hd, no copy.
    k = cache->keys[layer].narrow(2, 0, past + T);
    v = cache->values[layer].narrow(2, 0, past + T);
  }
  return o_proj(grouped_attention(q, k, v, allowed));
}

MlpImpl::MlpImpl(const ModelConfig& c, int64_t layer, const torch::TensorOptions& o) {
  const int64_t d = c.hidden_size, f = c.intermediate_size;
  gate_proj = register_module("gate_proj",
                              Projection(layer_path(layer, "mlp.gate_proj"), d, f, c.mlp_bias, o));
  up_proj =
      register_module("up_proj", Projection(layer_path(layer, "mlp.up_proj"), d, f, c.mlp_bias, o));
  down_proj = register_module("down_proj",
                              Projection(layer_path(layer, "mlp.down_proj"), f, d, c.mlp_bias, o));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  return down_proj(torch::silu(gate_proj(x)) * up_proj(x));
}

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& c, int64_t layer,
                                   const torch::TensorOptions& o)
    : layer_(layer) {
  self_attn = register_module("self_attn", Attention(c, layer, o));
  mlp = register_module("mlp", Mlp(c, layer, o));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, o));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, o));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& h, const torch::Tensor& cos,
                                        const torch::Tensor& sin, const torch::Tensor& allowed,
                                        KVCache* cache) {
  auto x = h + self_attn(input_layernorm(h), cos, sin, allowed, cache, layer_);
  return x + mlp(post_attention_layernorm(x));
}

DecoderImpl::DecoderImpl(const ModelConfig& c, const torch::TensorOptions& o) {
  embed_tokens = register_module("embed_tokens", Embedding(c.vocab_size, c.hidden_size, o));
  // A ModuleList would name layers "layers.0"; registering each layer under "layers.<i>" keeps
  // the HF names while letting us hold typed handles.
  auto list = torch::nn::ModuleList();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    layers.push_back(DecoderLayer(c, l, o));
    list->push_back(layers.back());
  }
  register_module("layers", list);
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps, o));
}

// ---- rotary --------------------------------------------------------------------------------

namespace {

// base ** (arange(0, hd, 2) / hd) in fp32, as transformers computes it.
torch::Tensor position_frequencies(double base, int64_t hd) {
  auto exponent =
      torch::arange(0, hd, 2, torch::kInt64).to(torch::kFloat32) / static_cast<float>(hd);
  return torch::pow(torch::tensor(static_cast<float>(base)), exponent);
}

// theta^(-2i/hd) for i < hd/2.
torch::Tensor base_frequencies(double base, int64_t hd) {
  return 1.0 / position_frequencies(base, hd);
}

// YaRN's attention-factor formula.
double yarn_mscale(double scale, double mscale = 1) {
  return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

}  // namespace

torch::Tensor rope_inverse_frequencies(const ModelConfig& c, int64_t seq_len) {
  const int64_t hd = c.head_size();
  if (!c.rope_scaling) return base_frequencies(c.rope_theta, hd);
  const RopeScaling& s = *c.rope_scaling;
  const std::string& type = s.rope_type;
  if (type == "linear") return base_frequencies(c.rope_theta, hd) / s.factor;
  if (type == "dynamic") {
    // NTK-aware: the base grows once the sequence is longer than max_position_embeddings.
    const double max_len = static_cast<double>(c.max_position_embeddings);
    const double len = std::max(static_cast<double>(seq_len), max_len);
    const double base = c.rope_theta * std::pow(s.factor * len / max_len - (s.factor - 1),
                                                static_cast<double>(hd) / (hd - 2));
    return base_frequencies(base, hd);
  }
  if (type == "longrope") {
    const bool long_context = seq_len > s.original_max_position_embeddings;
    const auto& factors = long_context ? s.long_factor : s.short_factor;
    auto ext = torch::tensor(std::vector<float>(factors.begin(), factors.end()));
    return 1.0 / (ext * position_frequencies(c.rope_theta, hd));
  }
  if (type == "yarn") {
    const double base = c.rope_theta;
    const auto pos_freqs = position_frequencies(base, hd);
    const auto extrapolation = 1.0 / pos_freqs;
    const auto interpolation = 1.0 / (s.factor * pos_freqs);
    // The dimensions that turn beta_fast and beta_slow times over the original length.
    const auto correction_dim = [&](double rotations) {
      return (hd * std::log(s.original_max_position_embeddings / (rotations * 2 * M_PI))) /
             (2 * std::log(base));
    };
    double low = correction_dim(s.beta_fast), high = correction_dim(s.beta_slow);
    if (s.truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(hd - 1));
    if (low == high) high += 0.001;
    const auto ramp = ((torch::arange(hd / 2, torch::kFloat32) - low) / (high - low)).clamp(0, 1);
    const auto extrapolation_factor = 1 - ramp;
    return interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor;
  }
  // llama3
  auto inv_freq = base_frequencies(c.rope_theta, hd);
  const double old_len = static_cast<double>(s.original_max_position_embeddings);
  const double low_wavelen = old_len / s.low_freq_factor;
  const double high_wavelen = old_len / s.high_freq_factor;
  auto wavelen = 2 * M_PI / inv_freq;
  // Long wavelengths (low frequencies) are slowed down by `factor`, short ones kept.
  auto scaled = torch::where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq);
  auto smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  auto smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
  auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
  return torch::where(medium, smoothed, scaled).to(torch::kFloat32);
}

double rope_attention_factor(const ModelConfig& c) {
  if (!c.rope_scaling) return 1.0;
  const RopeScaling& s = *c.rope_scaling;
  if (s.attention_factor) return *s.attention_factor;
  if (s.rope_type == "yarn") {
    if (s.mscale && s.mscale_all_dim && *s.mscale != 0 && *s.mscale_all_dim != 0)
      return yarn_mscale(s.factor, *s.mscale) / yarn_mscale(s.factor, *s.mscale_all_dim);
    return yarn_mscale(s.factor);
  }
  if (s.rope_type == "longrope") {
    if (s.factor <= 1.0) return 1.0;
    return std::sqrt(1 + std::log(s.factor) /
                             std::log(static_cast<double>(s.original_max_position_embeddings)));
  }
  return 1.0;
}

// ---- the whole model -----------------------------------------------------------------------

CausalLMImpl::CausalLMImpl(ModelConfig config, const torch::TensorOptions& options)
    : config_(std::move(config)) {
  model = register_module("model", Decoder(config_, options));
  if (!config_.tie_word_embeddings)
    lm_head = register_module(
        "lm_head", Projection("lm_head", config_.hidden_size, config_.vocab_size, false, options));
  inv_freq_ = original_inv_freq_ = rope_inverse_frequencies(config_);
  rope_attention_factor_ = rope_attention_factor(config_);
  rope_seq_len_cached_ = config_.max_position_embeddings;
}

torch::ScalarType CausalLMImpl::dtype() const {
  return model->norm->weight.scalar_type();
}
torch::Device CausalLMImpl::device() const {
  return model->norm->weight.device();
}

std::pair<torch::Tensor, torch::Tensor> CausalLMImpl::rotary(const torch::Tensor& positions,
                                                             torch::ScalarType dtype) {
  update_rope_frequencies(positions);
  if (inv_freq_.device() != positions.device()) inv_freq_ = inv_freq_.to(positions.device());
  // (B, T, hd/2) angles in fp32, duplicated for the two halves as HF's cat(freqs, freqs).
  auto freqs = positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq_;
  auto emb = torch::cat({freqs, freqs}, -1).unsqueeze(2);  // (B, T, 1, hd)
  if (rope_attention_factor_ == 1.0) return {emb.cos().to(dtype), emb.sin().to(dtype)};
  return {(emb.cos() * rope_attention_factor_).to(dtype),
          (emb.sin() * rope_attention_factor_).to(dtype)};
}

// transformers' dynamic_rope_update: dynamic scaling recomputes the frequencies whenever the
// sequence grows past the longest seen so far and returns to the original ones for a sequence
// shorter than max_position_embeddings; longrope switches between its short and long factors
// at original_max_position_embeddings.
void CausalLMImpl::update_rope_frequencies(const torch::Tensor& positions) {
  if (!config_.rope_scaling || positions.numel() == 0) return;
  const std::string& type = config_.rope_scaling->rope_type;
  if (type != "dynamic" && type != "longrope") return;
  const int64_t seq_len = positions.max().item<int64_t>() + 1;
  if (type == "longrope") {
    const bool long_context = seq_len > config_.rope_scaling->original_max_position_embeddings;
    if (long_context != rope_long_context_) {
      inv_freq_ = long_context ? rope_inverse_frequencies(config_, seq_len) : original_inv_freq_;
      rope_long_context_ = long_context;
    }
    return;
  }
  const int64_t cached = rope_seq_len_cached_;
  const int64_t original = config_.max_position_embeddings;
  if (seq_len > cached) {
    inv_freq_ = rope_inverse_frequencies(config_, seq_len);
    rope_seq_len_cached_ = seq_len;
  }
  if (seq_len < original && cached > original) {
    inv_freq_ = original_inv_freq_;
    rope_seq_len_cached_ = original;
  }
}

torch::Tensor CausalLMImpl::forward(const torch::Tensor& ids, const ForwardOptions& o) {
  TORCH_CHECK(ids.dim() == 2, "forward: ids must be (B, T), got ", ids.sizes());
  const int64_t B = ids.size(0), T = ids.size(1);
  const int64_t past = o.cache ? o.cache->length : 0;
  const int64_t S = past + T;
  if (o.cache) {
    TORCH_CHECK(o.cache->batch() == B, "forward: cache holds ", o.cache->batch(),
                " sequences, ids have ", B);
    if (S > o.cache->capacity())
      fail("forward: {} positions exceed the KV cache capacity {}", S, o.cache->capacity());
  }
  const auto dev = ids.device();
  torch::Tensor mask;  // (B, S) bool or undefined
  if (o.attention_mask.defined()) {
    TORCH_CHECK(o.attention_mask.dim() == 2 && o.attention_mask.size(0) == B &&
                    o.attention_mask.size(1) == S,
                "forward: attention_mask must be (B, past + T) = (", B, ", ", S, "), got ",
                o.attention_mask.sizes());
    mask = o.attention_mask.to(dev).ne(0);
  }

  torch::Tensor positions = o.position_ids;
  if (!positions.defined()) {
    if (mask.defined())
      positions = (mask.to(torch::kInt64).cumsum(1) - 1).clamp_min(0).narrow(1, S - T, T);
    else
      positions = torch::arange(past, S, torch::TensorOptions().dtype(torch::kInt64).device(dev))
                      .unsqueeze(0)
                      .expand({B, T});
  }
  TORCH_CHECK(positions.sizes() == ids.sizes(), "forward: position_ids must be (B, T)");

  // allowed: (B|1, 1, 1, T, S). A single new token without padding may see every cached key.
  torch::Tensor allowed;
  const bool windowed = config_.sliding_window && S > *config_.sliding_window;
  if (T > 1 || mask.defined() || windowed) {
    auto topt = torch::TensorOptions().dtype(torch::kInt64).device(dev);
    auto query_pos = torch::arange(past, S, topt).unsqueeze(1);  // (T, 1)
    auto key_pos = torch::arange(0, S, topt).unsqueeze(0);       // (1, S)
    allowed = key_pos.le(query_pos);                             // (T, S)
    if (windowed) allowed = allowed.logical_and((query_pos - key_pos).lt(*config_.sliding_window));
    allowed = allowed.view({1, 1, 1, T, S});
    if (mask.defined()) allowed = allowed.logical_and(mask.view({B, 1, 1, 1, S}));
  }
  if (o.segment_ids.defined()) {
    TORCH_CHECK(!o.cache && o.segment_ids.sizes() == ids.sizes(),
                "forward: segment_ids must be (B, T) and cannot be combined with a KV cache");
    auto seg = o.segment_ids.to(dev);
    auto same = seg.unsqueeze(2).eq(seg.unsqueeze(1)).logical_and(seg.ne(0).unsqueeze(1));
    allowed = allowed.logical_and(same.view({B, 1, 1, T, T}));  // (B, 1, 1, T, T)
  }

  auto h = model->embed_tokens(ids);  // (B, T, D)
  auto [cos, sin] = rotary(positions, h.scalar_type());
  const bool recompute = o.recompute && !o.cache && torch::GradMode::is_enabled();
  for (auto& layer : model->layers) {
    if (!recompute) {
      h = layer(h, cos, sin, allowed, o.cache);
      continue;
    }
    std::vector<torch::Tensor> trainable;
    for (const auto& p : layer->parameters())
      if (p.requires_grad()) trainable.push_back(p);
    auto run_layer = [layer = layer.ptr(), cos = cos, sin = sin,
                      allowed](const std::vector<torch::Tensor>& in) {
      return std::vector<torch::Tensor>{layer->forward(in[0], cos, sin, allowed, nullptr)};
    };
    h = run_recomputed(run_layer, {h}, trainable)[0];
  }
  if (o.cache) o.cache->length = S;

  if (o.output == ForwardOutput::logits_last) h = h.narrow(1, T - 1, 1);
  h = model->norm(h);
  if (o.output == ForwardOutput::hidden) return h;
  return logits(h);
}

torch::Tensor CausalLMImpl::logits(const torch::Tensor& hidden) {
  if (lm_head) return lm_head(hidden);
  return torch::nn::functional::linear(hidden, model->embed_tokens->weight);
}

KVCache CausalLMImpl::new_cache(int64_t batch, int64_t capacity) const {
  KVCache cache;
  auto opts = torch::TensorOptions().dtype(dtype()).device(device());
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    cache.keys.push_back(
        torch::empty({batch, config_.num_key_value_heads, capacity, config_.head_size()}, opts));
    cache.values.push_back(torch::empty_like(cache.keys.back()));
  }
  return cache;
}

std::vector<Projection> CausalLMImpl::projections() const {
  std::vector<Projection> out;
  for (const auto& layer : model->layers) {
    const auto& a = layer->self_attn;
    const auto& m = layer->mlp;
    for (const auto& p :
         {a->q_proj, a->k_proj, a->v_proj, a->o_proj, m->gate_proj, m->up_proj, m->down_proj})
      out.push_back(p);
  }
  if (lm_head) out.push_back(lm_head);
  return out;
}

void CausalLMImpl::set_trainable(bool trainable) {
  // Base parameters only: adapters attached under "<projection>.adapter" keep their own setting.
  for (auto& item : named_parameters()) {
    if (item.key().find(".adapter.") != std::string::npos) continue;
    item.value().set_requires_grad(trainable);
  }
}

void CausalLMImpl::init_random(double std) {
  torch::NoGradGuard no_grad;
  for (auto& item : named_parameters()) {
    if (item.key().find(".adapter.") != std::string::npos) continue;
    auto& p = item.value();
    if (item.key().find("norm") != std::string::npos)
      p.normal_(1.0, std);
    else
      p.normal_(0.0, std);
  }
}

}  // namespace ming::model
