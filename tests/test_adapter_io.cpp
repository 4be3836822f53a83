// Adapter folders: save/load round trips, PEFT compatibility both ways, error reports, and the
// import of MING-MOE's released files (PEFT folder + torch.save'd non_lora_trainables.bin).
#include <doctest/doctest.h>

#include <cstring>
#include <fstream>

#include <torch/torch.h>

#include "ming/adapt/adapter_io.h"
#include "ming/core/error.h"
#include "ming/io/json.h"
#include "ming/io/safetensors.h"
#include "support.h"
#include "test_adapter_model.h"

using namespace ming::adapt;
using ming::test::TempDir;
using ming::test::TinyDecoder;

namespace {

void randomise_adapters(const InjectedAdapters& injected) {
  torch::NoGradGuard g;
  for (auto p : injected.parameters) p.copy_(torch::randn_like(p) * 0.3);
}

// ---- a torch.save file written byte by byte the way Python's torch.save (zip format) does ----

uint32_t crc32(const std::string& data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char c : data) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

void put16(std::string& s, uint16_t v) {
  s.append(reinterpret_cast<const char*>(&v), 2);
}
void put32(std::string& s, uint32_t v) {
  s.append(reinterpret_cast<const char*>(&v), 4);
}

// An uncompressed ("stored") zip archive, as torch.save writes it (little-endian host assumed).
std::string make_zip(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string out, central;
  for (const auto& [name, data] : entries) {
    const uint32_t offset = uint32_t(out.size()), crc = crc32(data);
    put32(out, 0x04034b50), put16(out, 20), put16(out, 0), put16(out, 0), put16(out, 0),
        put16(out, 0), put32(out, crc), put32(out, uint32_t(data.size())),
        put32(out, uint32_t(data.size())), put16(out, uint16_t(name.size())), put16(out, 0);
    out += name;
    out += data;
    put32(central, 0x02014b50), put16(central, 20), put16(central, 20), put16(central, 0),
        put16(central, 0), put16(central, 0), put16(central, 0), put32(central, crc),
        put32(central, uint32_t(data.size())), put32(central, uint32_t(data.size())),
        put16(central, uint16_t(name.size())), put16(central, 0), put16(central, 0),
        put16(central, 0), put16(central, 0), put32(central, 0), put32(central, offset);
    central += name;
  }
  const uint32_t cd_offset = uint32_t(out.size());
  out += central;
  put32(out, 0x06054b50), put16(out, 0), put16(out, 0), put16(out, uint16_t(entries.size())),
      put16(out, uint16_t(entries.size())), put32(out, uint32_t(central.size())),
      put32(out, cd_offset), put16(out, 0);
  return out;
}

// Pickle protocol 2 opcodes as CPython's pickler emits them for torch.save(dict_of_tensors).
struct Pickle {
  std::string s;
  int memo = 0;
  void unicode(const std::string& v) {
    s += 'X';
    put32(s, uint32_t(v.size()));
    s += v;
    put();
  }
  void global(const std::string& module, const std::string& name) {
    s += 'c' + module + '\n' + name + '\n';
    put();
  }
  void put() {  // BINPUT, or LONG_BINPUT past 255 memo entries
    if (memo < 256) {
      s += 'q', s += char(memo++);
    } else {
      s += 'r';
      put32(s, uint32_t(memo++));
    }
  }
  void int1(int v) { s += 'K', s += char(v); }
  void tuple(const std::vector<int>& v) {
    if (v.size() == 1) {
      int1(v[0]);
      s += '\x85';
    } else if (v.size() == 2) {
      int1(v[0]), int1(v[1]);
      s += '\x86';
    } else {
      s += '(';
      for (int x : v) int1(x);
      s += 't';
    }
    put();
  }
};

std::string python_torch_save(const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  Pickle p;
  p.s = "\x80\x02";
  p.s += '}';
  p.put();
  p.s += '(';
  std::vector<std::pair<std::string, std::string>> records;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [key, t0] = tensors[i];
    auto t = t0.contiguous();
    const std::string storage =
        t.scalar_type() == torch::kBFloat16 ? "BFloat16Storage" : "FloatStorage";
    p.unicode(key);
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.s += '(';
    p.s += '(';  // persistent id tuple ('storage', type, key, location, numel)
    p.unicode("storage");
    p.global("torch", storage);
    p.unicode(std::to_string(i));
    p.unicode("cpu");
    p.int1(int(t.numel()));
    p.s += 't';
    p.put();
    p.s += 'Q';  // BINPERSID
    p.int1(0);   // storage offset
    std::vector<int> size(t.sizes().begin(), t.sizes().end());
    std::vector<int> stride(t.strides().begin(), t.strides().end());
    p.tuple(size);
    p.tuple(stride);
    p.s += '\x89';  // requires_grad False
    p.global("collections", "OrderedDict");
    p.s += ')';
    p.s += 'R';
    p.put();
    p.s += 't';
    p.put();
    p.s += 'R';
    p.put();
    records.emplace_back(
        "archive/data/" + std::to_string(i),
        std::string(static_cast<const char*>(t.data_ptr()), size_t(t.numel()) * t.element_size()));
  }
  p.s += 'u';
  p.s += '.';
  std::vector<std::pair<std::string, std::string>> entries = {{"archive/data.pkl", p.s},
                                                              {"archive/byteorder", "little"}};
  for (auto& r : records) entries.push_back(r);
  entries.emplace_back("archive/version", "3\n");
  return make_zip(entries);
}

void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

}  // namespace

TEST_CASE("adapter io: save then load reproduces a MoLoRA model exactly") {
  TempDir tmp;
  TinyDecoder a(2, 16, 24);
  AdapterConfig config;
  config.groups[1].shared_expert = true;
  config.groups[1].balance_loss = BalanceLoss::switch_style;
  auto injected = inject_adapters(a, config);
  randomise_adapters(injected);
  a.eval();
  auto ids = torch::randint(0, 10, {2, 6});
  // Inference on both sides: trainable and frozen adapters take different (equally exact) paths.
  torch::Tensor want;
  {
    torch::NoGradGuard no_grad;
    want = a.forward(ids);
  }
  save_adapter(tmp / "adapter", a, config, "Qwen/Qwen1.5-0.5B-Chat");

  TinyDecoder b(2, 16, 24);
  b.eval();
  auto loaded = load_adapter(b, tmp / "adapter");
  CHECK(loaded.format == "ming");
  CHECK(loaded.base_model_name_or_path == "Qwen/Qwen1.5-0.5B-Chat");
  CHECK(loaded.config.groups[1].shared_expert);
  CHECK(loaded.config.groups[1].balance_loss == BalanceLoss::switch_style);
  CHECK(torch::equal(b.forward(ids), want));
  CHECK(count_trainable_parameters(b) == 0);  // inference by default
  auto trainable = load_adapter(b, tmp / "adapter", LoadAdapterOptions{true});
  CHECK(count_trainable_parameters(b) == injected.n_trainable);
  CHECK(trainable.injected.n_trainable == injected.n_trainable);
}

TEST_CASE("adapter io: a MoLoRA adapter keeps MLP projections out of PEFT's target_modules") {
  TempDir tmp;
  TinyDecoder m(1, 8, 12);
  auto injected = inject_adapters(m, AdapterConfig{});
  save_adapter(tmp / "a", m, AdapterConfig{}, "base");
  auto j = ming::io::read_json(tmp / "a" / kAdapterConfigFile);
  CHECK(j["peft_type"] == "LORA");
  CHECK(j["task_type"] == "CAUSAL_LM");
  CHECK(j["r"] == 16);
  CHECK(j["lora_alpha"] == 32.0);
  CHECK(j["lora_dropout"] == 0.05);
  CHECK(j["target_modules"] == nlohmann::json({"q_proj", "k_proj", "v_proj", "o_proj"}));
  CHECK(j["bias"] == "none");
  CHECK(j["fan_in_fan_out"] == false);
  CHECK(j["inference_mode"] == true);
  CHECK(j["modules_to_save"].is_null());
  REQUIRE(j.contains("moe"));
  CHECK(j["moe"]["experts"] == 8);
  CHECK(j["moe"]["top_k"] == 2);
  CHECK(j["moe"]["router_bias"] == true);
  CHECK(j["moe"]["targets"]["gate_proj"] == 8);
  CHECK(j["moe"]["balance_loss"] == "none");
  auto store = ming::io::TensorStore::open(tmp / "a" / kAdapterWeightsFile);
  const std::string q = "base_model.model.model.layers.0.self_attn.q_proj.";
  const std::string g = "base_model.model.model.layers.0.mlp.gate_proj.";
  CHECK((store.info(q + "lora_A.weight").shape == std::vector<int64_t>{16, 8}));
  CHECK((store.info(q + "lora_B.weight").shape == std::vector<int64_t>{8, 16}));
  CHECK((store.info(g + "experts.7.lora_A.weight").shape == std::vector<int64_t>{16, 8}));
  CHECK((store.info(g + "experts.7.lora_B.weight").shape == std::vector<int64_t>{12, 16}));
  CHECK((store.info(g + "router.weight").shape == std::vector<int64_t>{8, 8}));
  CHECK((store.info(g + "router.bias").shape == std::vector<int64_t>{8}));
  CHECK((store.info(g + "router.weight").dtype == torch::kFloat32));
  CHECK_FALSE(store.contains(g + "lora_A.weight"));
  CHECK(store.names().size() == 4 * 2 + 3 * (8 * 2 + 2));
}

TEST_CASE("adapter io: a plain LoRA adapter is written with PEFT's fields and names only") {
  TempDir tmp;
  TinyDecoder m(2, 8, 12);
  AdapterConfig config = AdapterConfig::lora({"q_proj", "v_proj"}, 4, 8.0, 0.1);
  TargetGroup mlp = config.groups[0];
  mlp.name = "mlp";
  mlp.targets = {"down_proj"};
  mlp.r = 2;
  mlp.alpha = 16.0;
  config.groups.push_back(mlp);
  auto injected = inject_adapters(m, config);
  randomise_adapters(injected);
  save_adapter(tmp / "a", m, config, "base");
  auto j = ming::io::read_json(tmp / "a" / kAdapterConfigFile);
  CHECK_FALSE(j.contains("moe"));  // PEFT < 0.14 rejects unknown keys
  CHECK(j["target_modules"] == nlohmann::json({"q_proj", "v_proj", "down_proj"}));
  CHECK(j["r"] == 4);
  CHECK(j["rank_pattern"] == nlohmann::json({{"down_proj", 2}}));
  CHECK(j["alpha_pattern"] == nlohmann::json({{"down_proj", 16.0}}));
  for (const auto& name : ming::io::TensorStore::open(tmp / "a" / kAdapterWeightsFile).names()) {
    CAPTURE(name);
    CHECK(name.rfind("base_model.model.model.layers.", 0) == 0);
    CHECK((name.size() > 14 && (name.substr(name.size() - 14) == ".lora_A.weight" ||
                                name.substr(name.size() - 14) == ".lora_B.weight")));
  }
  // And back: one PEFT group plus the patterns give the same per-module ranks and outputs.
  auto ids = torch::randint(0, 10, {1, 4});
  m.eval();
  torch::NoGradGuard no_grad;  // inference on both sides (a trainable adapter takes another path)
  auto want = m.forward(ids);
  TinyDecoder n(2, 8, 12);
  n.eval();
  auto loaded = load_adapter(n, tmp / "a");
  CHECK(loaded.format == "peft");
  CHECK(torch::equal(n.forward(ids), want));
}

TEST_CASE("adapter io: loads a PEFT adapter folder") {
  TempDir tmp;
  std::filesystem::create_directories(tmp / "peft");
  // Fields as PEFT 0.10 writes them.
  nlohmann::json j = {{"alpha_pattern", nlohmann::json::object()},
                      {"auto_mapping", nullptr},
                      {"base_model_name_or_path", "Qwen/Qwen1.5-0.5B-Chat"},
                      {"bias", "none"},
                      {"fan_in_fan_out", false},
                      {"inference_mode", true},
                      {"init_lora_weights", true},
                      {"layers_pattern", nullptr},
                      {"layers_to_transform", nullptr},
                      {"loftq_config", nlohmann::json::object()},
                      {"lora_alpha", 16},
                      {"lora_dropout", 0.05},
                      {"megatron_config", nullptr},
                      {"megatron_core", "megatron.core"},
                      {"modules_to_save", nullptr},
                      {"peft_type", "LORA"},
                      {"r", 4},
                      {"rank_pattern", nlohmann::json::object()},
                      {"revision", nullptr},
                      {"target_modules", {"v_proj", "q_proj"}},
                      {"task_type", "CAUSAL_LM"},
                      {"use_dora", false},
                      {"use_rslora", false}};
  ming::io::write_json(tmp / "peft" / kAdapterConfigFile, j);
  TinyDecoder m(1, 8, 12);
  torch::manual_seed(9);
  auto qa = torch::randn({4, 8}), qb = torch::randn({8, 4});
  auto va = torch::randn({4, 8}), vb = torch::randn({8, 4});
  const std::string p = "base_model.model.model.layers.0.self_attn.";
  ming::io::save_safetensors(tmp / "peft" / kAdapterWeightsFile,
                             {{p + "q_proj.lora_A.weight", qa.to(torch::kBFloat16)},
                              {p + "q_proj.lora_B.weight", qb.to(torch::kBFloat16)},
                              {p + "v_proj.lora_A.weight", va},
                              {p + "v_proj.lora_B.weight", vb}});
  auto loaded = load_adapter(m, tmp / "peft");
  CHECK(loaded.format == "peft");
  auto x = torch::randn({3, 8});
  auto q = m.layers[0].q;
  auto want = torch::nn::functional::linear(x, q->weight, q->bias) +
              4.0 * torch::mm(torch::mm(x, qa.to(torch::kBFloat16).to(torch::kFloat32).t()),
                              qb.to(torch::kBFloat16).to(torch::kFloat32).t());
  m.eval();
  CHECK(torch::allclose(q(x), want, 1e-5, 1e-5));
  CHECK(m.layers[0].k->adapter() == nullptr);
}

TEST_CASE("adapter io: missing, unexpected and misshapen tensors are all named in one error") {
  TempDir tmp;
  TinyDecoder m(1, 8, 12);
  inject_adapters(m, AdapterConfig::lora({"q_proj"}, 4));
  save_adapter(tmp / "a", m, AdapterConfig::lora({"q_proj"}, 4), "base");
  // Edit the file: drop lora_B, add a stray tensor, and reshape lora_A.
  const std::string p = "base_model.model.model.layers.0.self_attn.q_proj.";
  ming::io::save_safetensors(
      tmp / "a" / kAdapterWeightsFile,
      {{p + "lora_A.weight", torch::zeros({4, 9})}, {p + "lora_C.weight", torch::zeros({1})}});
  TinyDecoder n(1, 8, 12);
  try {
    load_adapter(n, tmp / "a");
    FAIL("expected a UsageError");
  } catch (const ming::UsageError& e) {
    const std::string what = e.what();
    CHECK(what.find(p + "lora_A.weight is [4, 9]") != std::string::npos);
    CHECK(what.find("needs [4, 8]") != std::string::npos);
    CHECK(what.find(p + "lora_B.weight") != std::string::npos);
    CHECK(what.find(p + "lora_C.weight") != std::string::npos);
  }
  CHECK(n.layers[0].q->adapter() == nullptr);  // nothing half-attached
  CHECK_THROWS_WITH_AS(load_adapter(n, tmp / "nowhere"), doctest::Contains("adapter_config.json"),
                       ming::UsageError);
}

TEST_CASE("adapter io: PEFT features ming cannot represent are usage errors") {
  nlohmann::json base = {{"peft_type", "LORA"}, {"r", 4}, {"target_modules", {"q_proj"}}};
  auto with = [&](const char* key, nlohmann::json v) {
    auto j = base;
    j[key] = v;
    return j;
  };
  CHECK_THROWS_WITH_AS(adapter_config_from_json(with("bias", "all"), "x.json"),
                       doctest::Contains("bias"), ming::UsageError);
  CHECK_THROWS_AS(adapter_config_from_json(with("use_dora", true), "x.json"), ming::UsageError);
  CHECK_THROWS_AS(adapter_config_from_json(with("peft_type", "IA3"), "x.json"), ming::UsageError);
  CHECK_THROWS_AS(adapter_config_from_json(with("modules_to_save", {"lm_head"}), "x.json"),
                  ming::UsageError);
  CHECK_THROWS_AS(adapter_config_from_json(with("target_modules", nullptr), "x.json"),
                  ming::UsageError);
  auto regex = adapter_config_from_json(with("target_modules", R"(.*\.(q|v)_proj)"), "x.json");
  CHECK((regex.groups[0].targets == std::vector<std::string>{R"(re:.*\.(q|v)_proj)"}));
}

TEST_CASE("adapter io: torch::pickle_load reads a torch.save zip written as Python writes it") {
  TempDir tmp;
  auto a = torch::arange(6, torch::kFloat32).view({2, 3});
  auto b = torch::tensor({1.5, -2.0}).to(torch::kBFloat16);
  write_bytes(tmp / "x.bin", python_torch_save({{"a.weight", a}, {"b", b}}));
  auto dict = read_torch_save_dict(tmp / "x.bin");
  REQUIRE(dict.size() == 2);
  CHECK(torch::equal(dict.at("a.weight"), a));
  CHECK((dict.at("b").scalar_type() == torch::kBFloat16));
  CHECK(torch::equal(dict.at("b"), b));
  write_bytes(tmp / "bad.bin", "not a zip");
  CHECK_THROWS_WITH_AS(read_torch_save_dict(tmp / "bad.bin"), doctest::Contains("bad.bin"),
                       ming::UsageError);
}

TEST_CASE("adapter io: imports MING-MOE's released format (PEFT folder + non_lora_trainables)") {
  for (bool python_style : {true, false}) {
    CAPTURE(python_style);
    TempDir tmp;
    const auto dir = tmp / "ming-moe";
    std::filesystem::create_directories(dir);
    // Their adapter_config.json: PEFT fields; target_modules may name the MLP projections too.
    nlohmann::json j = {
        {"peft_type", "LORA"},
        {"task_type", "CAUSAL_LM"},
        {"base_model_name_or_path", "Qwen1.5-1.8B-Chat"},
        {"r", 4},
        {"lora_alpha", 8},
        {"lora_dropout", 0.05},
        {"bias", "none"},
        {"target_modules",
         {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}};
    ming::io::write_json(dir / kAdapterConfigFile, j);
    torch::manual_seed(11);
    const int64_t h = 8, im = 12, n_experts = 3, r = 4;
    ming::io::NamedTensors attention;
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
      const std::string p = std::string("base_model.model.model.layers.0.self_attn.") + proj;
      attention.emplace_back(p + ".lora_A.weight", torch::randn({r, h}));
      attention.emplace_back(p + ".lora_B.weight", torch::randn({h, r}));
    }
    ming::io::save_safetensors(dir / kAdapterWeightsFile, attention);
    std::vector<std::pair<std::string, torch::Tensor>> moe;
    for (auto [proj, in, out] : {std::tuple{"gate_proj", h, im}, std::tuple{"up_proj", h, im},
                                 std::tuple{"down_proj", im, h}}) {
      const std::string p = std::string("base_model.model.model.layers.0.mlp.") + proj;
      for (int64_t i = 0; i < n_experts; ++i) {
        moe.emplace_back(
            p + ".experts." + std::to_string(i) + ".lora_A_" + std::to_string(i) + ".weight",
            torch::randn({r, in}));
        moe.emplace_back(
            p + ".experts." + std::to_string(i) + ".lora_B_" + std::to_string(i) + ".weight",
            torch::randn({out, r}));
      }
      moe.emplace_back(p + ".switch.weight", torch::randn({n_experts, in}));
      moe.emplace_back(p + ".switch.bias", torch::randn({n_experts}));
    }
    if (python_style) {
      write_bytes(dir / kMingNonLoraFile, python_torch_save(moe));
    } else {
      c10::Dict<std::string, torch::Tensor> d;
      for (auto& [k, t] : moe) d.insert(k, t);
      auto bytes = torch::pickle_save(d);
      write_bytes(dir / kMingNonLoraFile, std::string(bytes.begin(), bytes.end()));
    }

    TinyDecoder m(1, h, im);
    m.eval();
    auto loaded = load_adapter(m, dir);
    CHECK(loaded.format == "ming-moe");
    REQUIRE(loaded.config.groups.size() == 2);
    const auto& g = loaded.config.groups[0];
    CHECK(g.experts == n_experts);
    CHECK(g.top_k == 2);
    CHECK(g.r == r);
    CHECK(g.alpha == 8.0);
    CHECK(g.router_bias);
    CHECK((loaded.config.groups[1].targets ==
           std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj"}));
    // gate_proj's MoLoRA output equals MING's formula computed here from the raw tensors.
    auto gate = m.layers[0].gate;
    auto molora = std::dynamic_pointer_cast<MoloraAdapter>(gate->adapter());
    REQUIRE(molora);
    auto x = torch::randn({5, h}, torch::kFloat64);
    auto find = [&](const std::string& leaf) {
      for (auto& [k, t] : moe)
        if (k == "base_model.model.model.layers.0.mlp.gate_proj." + leaf)
          return t.to(torch::kFloat64);
      FAIL("no tensor " << leaf);
      return torch::Tensor();
    };
    auto logits = torch::mm(x, find("switch.weight").t()) + find("switch.bias");
    auto probs = logits.softmax(-1);
    auto top = probs.topk(2, -1);
    auto w = std::get<0>(top) / std::get<0>(top).sum(-1, true);
    auto base = torch::mm(x, gate->weight.to(torch::kFloat64).t());
    auto want = base.clone();
    for (int64_t t = 0; t < 5; ++t)
      for (int64_t s = 0; s < 2; ++s) {
        const int64_t e = std::get<1>(top)[t][s].item<int64_t>();
        const auto i = std::to_string(e);
        auto d = torch::mv(find("experts." + i + ".lora_B_" + i + ".weight"),
                           torch::mv(find("experts." + i + ".lora_A_" + i + ".weight"), x[t]));
        want[t] += w[t][s] * 2.0 * d;
      }
    CHECK(torch::allclose(gate(x.to(torch::kFloat32)).to(torch::kFloat64), want, 1e-4, 1e-4));
  }
}
