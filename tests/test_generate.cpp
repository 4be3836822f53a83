// Generation and scoring on a small random model with a toy tokenizer: greedy equals the plain
// argmax loop, batching changes nothing, sampling is seeded, stop rules and streaming behave, and
// scores are the model's log-likelihoods.
#include <ATen/CPUGeneratorImpl.h>
#include <doctest/doctest.h>
#include <torch/torch.h>

#include "ming/core/error.h"
#include "ming/gen/bench.h"
#include "ming/gen/generate.h"
#include "ming/model/transformer.h"
#include "support.h"

using namespace ming;

namespace {

// Token i < 26 is the letter 'a'+i, 26 is a space, 27/28 are the two bytes of "é" (C3 A9),
// 29 is a special token; the rest are "<n>".
class ToyTokenizer : public text::Tokenizer {
 public:
  std::vector<text::TokenId> encode(std::string_view, bool, bool) const override { return {}; }
  std::string decode(const std::vector<text::TokenId>& ids, bool skip_special) const override {
    std::string out;
    for (auto id : ids) {
      if (id == 29 && skip_special) continue;
      out += piece(id);
    }
    return out;
  }
  std::string piece(text::TokenId id) const override {
    if (id < 26) return std::string(1, char('a' + id));
    if (id == 26) return " ";
    if (id == 27) return "\xC3";
    if (id == 28) return "\xA9";
    if (id == 29) return "<special>";
    return "<" + std::to_string(id) + ">";
  }
  std::optional<text::TokenId> find(std::string_view) const override { return std::nullopt; }
  int64_t vocab_size() const override { return 40; }
  std::optional<text::TokenId> bos_id() const override { return 30; }
  std::vector<text::TokenId> eos_ids() const override { return {31}; }
  bool is_special(text::TokenId id) const override { return id >= 29; }
};

model::ModelConfig toy_config() {
  model::ModelConfig c;
  c.model_type = "qwen2";
  c.vocab_size = 40;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.qkv_bias = true;
  c.tie_word_embeddings = true;
  c.max_position_embeddings = 128;
  return c;
}

model::CausalLM toy_model(uint64_t seed = 1) {
  torch::manual_seed(seed);
  model::CausalLM m(toy_config(), torch::TensorOptions().dtype(torch::kFloat32));
  m->init_random(0.5);  // large weights: peaked, prompt-dependent distributions
  return m;
}

std::vector<int64_t> greedy_reference(model::CausalLM& m, std::vector<int64_t> ids, int64_t n) {
  torch::NoGradGuard ng;
  std::vector<int64_t> out;
  for (int64_t i = 0; i < n; ++i) {
    auto logits = m->forward(torch::tensor(ids, torch::kInt64).view({1, -1}));
    const int64_t next = logits[0][-1].argmax().item<int64_t>();
    out.push_back(next);
    ids.push_back(next);
  }
  return out;
}

}  // namespace

TEST_CASE("generate: greedy decode with the KV cache equals the full-forward argmax loop") {
  auto m = toy_model();
  ToyTokenizer tok;
  gen::GenerateOptions o;
  o.max_new_tokens = 12;
  const std::vector<int64_t> prompt = {30, 3, 7, 1};
  auto out = gen::generate(m, tok, {prompt}, o);
  REQUIRE(out.size() == 1);
  CHECK((out[0].finish == gen::FinishReason::length));
  CHECK(out[0].tokens == greedy_reference(m, prompt, 12));
  CHECK(out[0].text == tok.decode({out[0].tokens.begin(), out[0].tokens.end()}, true));
}

TEST_CASE("generate: a batch of different-length prompts gives each prompt's own result") {
  auto m = toy_model(2);
  ToyTokenizer tok;
  gen::GenerateOptions o;
  o.max_new_tokens = 10;
  std::vector<std::vector<int64_t>> prompts = {
      {30, 5}, {30, 1, 2, 3, 4, 5, 6, 7}, {30, 20, 21, 22}};
  auto batched = gen::generate(m, tok, prompts, o);
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto alone = gen::generate(m, tok, {prompts[i]}, o);
    CHECK(batched[i].tokens == alone[0].tokens);
  }
  // With an EOS id one sequence stops early and leaves the batch; the others are unaffected.
  auto eos_at = batched[1].tokens[3];
  o.eos_ids = {eos_at};
  auto stopped = gen::generate(m, tok, prompts, o);
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto alone = gen::generate(m, tok, {prompts[i]}, o);
    CHECK(stopped[i].tokens == alone[0].tokens);
    const auto& t = stopped[i].tokens;
    CHECK(std::find(t.begin(), t.end(), eos_at) == t.end());
  }
  CHECK((stopped[1].finish == gen::FinishReason::eos));
  CHECK(stopped[1].tokens.size() <= 3);
}

TEST_CASE("generate: sampling is reproducible per seed and top-k 1 is greedy") {
  auto m = toy_model(3);
  ToyTokenizer tok;
  gen::GenerateOptions o;
  o.max_new_tokens = 16;
  o.sampling.temperature = 1.5;
  o.sampling.seed = 42;
  const std::vector<int64_t> prompt = {30, 9};
  auto a = gen::generate(m, tok, {prompt}, o);
  auto b = gen::generate(m, tok, {prompt}, o);
  CHECK(a[0].tokens == b[0].tokens);
  bool differs = false;
  for (uint64_t seed = 1; seed < 6 && !differs; ++seed) {
    o.sampling.seed = seed;
    differs = gen::generate(m, tok, {prompt}, o)[0].tokens != a[0].tokens;
  }
  CHECK(differs);
  o.sampling.top_k = 1;
  gen::GenerateOptions greedy;
  greedy.max_new_tokens = 16;
  CHECK(gen::generate(m, tok, {prompt}, o)[0].tokens ==
        gen::generate(m, tok, {prompt}, greedy)[0].tokens);
}

TEST_CASE("generate: sample_next applies repetition penalty, top-k and top-p like transformers") {
  torch::Generator g = at::detail::createCPUGenerator(0);
  auto logits = torch::tensor({{2.0f, 1.9f, -1.0f, 0.5f}});
  gen::SamplingOptions greedy;
  CHECK(gen::sample_next(logits, {{}}, greedy, g) == std::vector<int64_t>{0});
  // Penalty 2 on token 0: 2.0 -> 1.0, so token 1 wins; a negative logit is multiplied instead.
  gen::SamplingOptions rep;
  rep.repetition_penalty = 2.0;
  CHECK(gen::sample_next(logits, {{0}}, rep, g) == std::vector<int64_t>{1});
  auto neg = torch::tensor({{-1.0f, -1.5f}});
  CHECK(gen::sample_next(neg, {{0}}, rep, g) == std::vector<int64_t>{1});  // -2.0 < -1.5
  // top-p 0.5 with a 0.9-probability token keeps that token alone.
  auto peaked = torch::tensor({{0.0f, std::log(9.0f) + 0.0f, -50.0f}});
  gen::SamplingOptions topp;
  topp.temperature = 1.0;
  topp.top_p = 0.5;
  for (int i = 0; i < 20; ++i) CHECK(gen::sample_next(peaked, {{}}, topp, g)[0] == 1);
  // top-k 2 never picks the third token, even at a high temperature.
  gen::SamplingOptions topk;
  topk.temperature = 100.0;
  topk.top_k = 2;
  for (int i = 0; i < 50; ++i) CHECK(gen::sample_next(logits, {{}}, topk, g)[0] < 2);
}

TEST_CASE("generate: stop strings cut the text and streamed deltas never split a character") {
  CHECK(gen::stable_prefix_length("abc", {}) == 3);
  CHECK(gen::stable_prefix_length("ab\xC3", {}) == 2);      // incomplete é
  CHECK(gen::stable_prefix_length("ab\xE2\x82", {}) == 2);  // incomplete €
  CHECK(gen::stable_prefix_length("ab\xC3\xA9", {}) == 4);
  CHECK(gen::stable_prefix_length("ab\xEF\xBF\xBD", {}) == 2);    // U+FFFD held back
  CHECK(gen::stable_prefix_length("hello wor", {"world"}) == 6);  // "wor" may start "world"
  CHECK(gen::stable_prefix_length("hello w", {"xyz", "wq"}) == 6);
  CHECK(gen::stable_prefix_length("hello", {"lo!"}) == 3);

  // A model that always says "é" byte by byte, then "ab ", repeating: a fixed-output model is
  // built by making the head a lookup of the previous token.
  model::ModelConfig c = toy_config();
  c.num_hidden_layers = 1;
  c.tie_word_embeddings = false;
  model::CausalLM m(c, torch::TensorOptions().dtype(torch::kFloat32));
  {
    torch::NoGradGuard ng;
    for (auto& p : m->parameters()) p.zero_();
    m->model->norm->weight.fill_(1);
    m->model->layers[0]->input_layernorm->weight.fill_(1);
    m->model->layers[0]->post_attention_layernorm->weight.fill_(1);
    // Embedding: token t -> one-hot(t) (width 32 covers ids < 32); head: t -> successor(t).
    auto& emb = m->model->embed_tokens->weight;
    auto& head = m->lm_head->weight;
    const std::map<int, int> succ = {{30, 27}, {27, 28}, {28, 0}, {0, 1}, {1, 26}, {26, 27}};
    for (auto [from, to] : succ) {
      emb[from][from] = 1.0;
      head[to][from] = 10.0;
    }
  }
  ToyTokenizer tok;
  gen::GenerateOptions o;
  o.max_new_tokens = 30;
  std::string streamed;
  std::vector<std::string> deltas;
  auto out = gen::generate(m, tok, {{30}}, o, [&](size_t i, const std::string& d) {
    CHECK(i == 0);
    deltas.push_back(d);
    streamed += d;
  });
  CHECK(out[0].text.rfind("\xC3\xA9"
                          "ab \xC3\xA9"
                          "ab ",
                          0) == 0);
  CHECK(streamed == out[0].text);
  for (const auto& d : deltas) CHECK(gen::stable_prefix_length(d, {}) == d.size());

  o.stop = {
      "b \xC3\xA9"
      "a"};
  streamed.clear();
  out = gen::generate(m, tok, {{30}}, o, [&](size_t, const std::string& d) { streamed += d; });
  CHECK((out[0].finish == gen::FinishReason::stop));
  CHECK(out[0].text ==
        "\xC3\xA9"
        "a");
  CHECK(streamed == out[0].text);
}

TEST_CASE("generate: score returns the model's log-likelihoods, batched or not") {
  auto m = toy_model(4);
  std::vector<gen::ScoreRequest> reqs = {
      {{30, 1, 2}, {3, 4}}, {{30}, {7}}, {{30, 5, 6, 7, 8, 9}, {10, 11, 12}}, {{30, 2}, {2, 2, 2}}};
  auto batched = gen::score(m, reqs, {/*batch_size=*/3, 0});
  auto single = gen::score(m, reqs, {/*batch_size=*/1, 0});
  torch::NoGradGuard ng;
  for (size_t i = 0; i < reqs.size(); ++i) {
    std::vector<int64_t> full = reqs[i].context;
    full.insert(full.end(), reqs[i].continuation.begin(), reqs[i].continuation.end());
    auto lp = m->forward(torch::tensor(full, torch::kInt64).view({1, -1}))[0].log_softmax(-1);
    double want = 0;
    bool greedy = true;
    for (size_t k = 0; k < reqs[i].continuation.size(); ++k) {
      const int64_t pos = reqs[i].context.size() + k - 1, tok = reqs[i].continuation[k];
      want += lp[pos][tok].item<double>();
      greedy = greedy && lp[pos].argmax().item<int64_t>() == tok;
    }
    CHECK(batched[i].logprob == doctest::Approx(want).epsilon(1e-5));
    CHECK(single[i].logprob == doctest::Approx(want).epsilon(1e-5));
    CHECK(batched[i].greedy == greedy);
    CHECK(batched[i].tokens == static_cast<int64_t>(reqs[i].continuation.size()));
  }
  // The greedy continuation is flagged as such.
  auto g = greedy_reference(m, {30, 4}, 3);
  CHECK(gen::score(m, {{{30, 4}, g}})[0].greedy);
  CHECK_THROWS_AS(gen::score(m, {{{}, {1}}}), UsageError);
}

TEST_CASE("generate: decode benchmark reports speed and its bandwidth bound") {
  auto m = toy_model();
  auto r = gen::bench_decode(m, 1, 4, 4, int64_t(1) << 20);
  CHECK(r.tokens_per_second > 0);
  CHECK(r.copy_bandwidth > 0);
  CHECK(r.weight_bytes == doctest::Approx(toy_config().parameter_count() * 4.0));
  CHECK(r.summary().find("tok/s") != std::string::npos);
}
