// llama2.c import: the converted HF model computes what llama2.c's run.c computes on the raw
// checkpoint (interleaved-pair RoPE), and damaged checkpoints are refused.
#include <cmath>
#include <fstream>

#include <doctest/doctest.h>
#include <torch/torch.h>

#include "ming/core/error.h"
#include "ming/io/json.h"
#include "ming/model/llama2c.h"
#include "ming/model/load.h"
#include "support.h"

using namespace ming;
namespace fs = std::filesystem;

namespace {

fs::path stories_bin() {
  return test::data_dir() / "models" / "stories260K.bin";
}
fs::path tok512_bin() {
  return test::data_dir() / "models" / "tok512.bin";
}

// run.c's forward pass, position by position, straight from the checkpoint's float arrays.
torch::Tensor run_c_forward(const fs::path& path, const std::vector<int64_t>& tokens) {
  std::ifstream in(path, std::ios::binary);
  int32_t h[7];
  in.read(reinterpret_cast<char*>(h), sizeof(h));
  const int64_t dim = h[0], hidden = h[1], L = h[2], nh = h[3], nkv = h[4], V = std::abs(h[5]),
                seq = h[6], hs = dim / nh, kv_dim = nkv * hs, kv_mul = nh / nkv;
  auto read = [&](std::vector<int64_t> shape) {
    auto t = torch::empty(shape, torch::kFloat32);
    in.read(reinterpret_cast<char*>(t.data_ptr<float>()), t.numel() * 4);
    return t.to(torch::kFloat64);
  };
  auto emb = read({V, dim}), rms_att = read({L, dim}), wq = read({L, dim, dim}),
       wk = read({L, kv_dim, dim}), wv = read({L, kv_dim, dim}), wo = read({L, dim, dim}),
       rms_ffn = read({L, dim}), w1 = read({L, hidden, dim}), w2 = read({L, dim, hidden}),
       w3 = read({L, hidden, dim}), rms_final = read({dim});
  read({seq, hs / 2});
  read({seq, hs / 2});
  auto wcls = h[5] > 0 ? emb : read({V, dim});
  auto rmsnorm = [](const torch::Tensor& x, const torch::Tensor& w) {
    return w * x / std::sqrt(x.pow(2).mean().item<double>() + 1e-5);
  };
  std::vector<std::vector<torch::Tensor>> kc(L), vc(L);
  std::vector<torch::Tensor> out;
  for (size_t pos = 0; pos < tokens.size(); ++pos) {
    auto x = emb[tokens[pos]].clone();
    for (int64_t l = 0; l < L; ++l) {
      auto xb = rmsnorm(x, rms_att[l]);
      auto q = torch::mv(wq[l], xb), k = torch::mv(wk[l], xb), v = torch::mv(wv[l], xb);
      for (int64_t i = 0; i < dim; i += 2) {  // interleaved pairs
        const double freq = 1.0 / std::pow(10000.0, double(i % hs) / hs);
        const double a = pos * freq, fcr = std::cos(a), fci = std::sin(a);
        for (auto* t : {&q, &k}) {
          if (t == &k && i >= kv_dim) continue;
          const double v0 = (*t)[i].item<double>(), v1 = (*t)[i + 1].item<double>();
          (*t)[i] = v0 * fcr - v1 * fci;
          (*t)[i + 1] = v0 * fci + v1 * fcr;
        }
      }
      kc[l].push_back(k);
      vc[l].push_back(v);
      auto att_out = torch::zeros({dim}, torch::kFloat64);
      for (int64_t hh = 0; hh < nh; ++hh) {
        auto qh = q.narrow(0, hh * hs, hs);
        const int64_t g = (hh / kv_mul) * hs;
        std::vector<double> s;
        for (size_t t = 0; t <= pos; ++t)
          s.push_back(qh.dot(kc[l][t].narrow(0, g, hs)).item<double>() / std::sqrt(double(hs)));
        double mx = *std::max_element(s.begin(), s.end()), z = 0;
        for (auto& e : s) z += (e = std::exp(e - mx));
        for (size_t t = 0; t <= pos; ++t)
          att_out.narrow(0, hh * hs, hs) += s[t] / z * vc[l][t].narrow(0, g, hs);
      }
      x = x + torch::mv(wo[l], att_out);
      xb = rmsnorm(x, rms_ffn[l]);
      auto hb = torch::mv(w1[l], xb), hb2 = torch::mv(w3[l], xb);
      hb = hb / (1 + torch::exp(-hb)) * hb2;
      x = x + torch::mv(w2[l], hb);
    }
    out.push_back(torch::mv(wcls, rmsnorm(x, rms_final)));
  }
  return torch::stack(out);
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

TEST_CASE("llama2c: permute_rotary_rows is HF's permute (pairs within a head become halves)") {
  // One head of width 4, two input columns: rows r0 r1 r2 r3 (pairs (r0,r1), (r2,r3)) become
  // r0 r2 r1 r3 (first elements of the pairs, then the second elements).
  auto w = torch::arange(8, torch::kFloat32).view({4, 2});
  auto p = model::permute_rotary_rows(w, 1);
  CHECK(torch::equal(p, torch::tensor({0.f, 1.f, 4.f, 5.f, 2.f, 3.f, 6.f, 7.f}).view({4, 2})));
  // Two heads: the permutation stays inside each head.
  auto w2 = torch::arange(8, torch::kFloat32).view({8, 1});
  CHECK(torch::equal(model::permute_rotary_rows(w2, 2).view({8}),
                     torch::tensor({0.f, 2.f, 1.f, 3.f, 4.f, 6.f, 5.f, 7.f})));
}

TEST_CASE("llama2c: imported stories260K computes run.c's logits") {
  REQUIRE(fs::exists(stories_bin()));
  test::TempDir tmp;
  model::Llama2cImportOptions o;
  o.checkpoint = stories_bin();
  o.tokenizer = tok512_bin();
  o.output = tmp / "stories";
  model::import_llama2c(o);
  for (const char* f : {"config.json", "model.safetensors", "generation_config.json",
                        "tokenizer.bin", "tokenizer_config.json"})
    CHECK(fs::exists(tmp / "stories" / f));
  auto cfg = io::read_json(tmp / "stories" / "config.json");
  CHECK(cfg["architectures"][0] == "LlamaForCausalLM");
  CHECK(cfg["hidden_size"] == 64);
  CHECK(cfg["intermediate_size"] == 172);
  CHECK(cfg["num_hidden_layers"] == 5);
  CHECK(cfg["num_attention_heads"] == 8);
  CHECK(cfg["num_key_value_heads"] == 4);
  CHECK(cfg["vocab_size"] == 512);
  CHECK(cfg["tie_word_embeddings"] == true);
  CHECK(cfg["rms_norm_eps"] == doctest::Approx(1e-5));

  model::LoadOptions lo;
  lo.dtype = torch::kFloat32;
  lo.load_tokenizer = false;
  auto loaded = model::load_model(tmp / "stories", lo);
  const std::vector<int64_t> tokens = {1, 403, 407, 261, 378, 429, 271, 300, 11};
  torch::NoGradGuard ng;
  auto got = loaded.model->forward(torch::tensor(tokens, torch::kInt64).view({1, -1}))[0];
  auto want = run_c_forward(stories_bin(), tokens);
  CHECK((got.to(torch::kFloat64) - want).abs().max().item<double>() < 1e-4);
}

TEST_CASE("llama2c: damaged checkpoints are refused naming the file") {
  test::TempDir tmp;
  const std::string bytes = test::read_text(stories_bin());
  SUBCASE("truncated") {
    test::write_text(tmp / "cut.bin", bytes.substr(0, bytes.size() - 100));
    auto msg = usage_error([&] { model::read_llama2c(tmp / "cut.bin"); });
    CHECK(msg.find("cut.bin") != std::string::npos);
    CHECK(msg.find("implies") != std::string::npos);
  }
  SUBCASE("garbage header") {
    test::write_text(tmp / "junk.bin", std::string(64, '\xff'));
    CHECK(usage_error([&] { model::read_llama2c(tmp / "junk.bin"); }).find("junk.bin") !=
          std::string::npos);
  }
  SUBCASE("through ming-merge: exit 2 and one line") {
    test::write_text(tmp / "cut.bin", bytes.substr(0, 1000));
    auto r = test::run_command(
        test::tool("ming-merge").string() + " convert --from llama2c --checkpoint '" +
        (tmp / "cut.bin").string() + "' -o '" + (tmp / "out").string() + "'");
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("cut.bin") != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK_FALSE(fs::exists(tmp / "out"));
  }
}
