// Helpers of the route tests: a strict-enough XML well-formedness check for the SVG pictures,
// the same check through Python's minidom when python3 is present, and a tiny model + MoLoRA
// adapter on disk for the end-to-end runs.
#pragma once

#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include "ming/adapt/adapter_io.h"
#include "ming/adapt/config.h"
#include "ming/model/load.h"
#include "support.h"

namespace ming::test {

inline size_t count_lines(const std::string& text) {
  return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

// "" when `xml` is a well-formed document (prolog, comments, one root element, balanced tags,
// quoted attributes, known entities, no raw '<' or '&' in text); else what is wrong and where.
inline std::string xml_well_formed(const std::string& xml) {
  size_t i = 0, n = xml.size();
  std::vector<std::string> stack;
  int roots = 0;
  auto name_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == ':' ||
           c == '.';
  };
  auto entity_ok = [&](size_t at) {  // xml[at] == '&'
    size_t semi = xml.find(';', at);
    if (semi == std::string::npos || semi - at > 10) return false;
    std::string e = xml.substr(at + 1, semi - at - 1);
    if (e == "amp" || e == "lt" || e == "gt" || e == "quot" || e == "apos") return true;
    if (e.size() > 1 && e[0] == '#') {
      bool hex = e[1] == 'x';
      std::string digits = e.substr(hex ? 2 : 1);
      return !digits.empty() && std::all_of(digits.begin(), digits.end(), [&](char c) {
        return hex ? std::isxdigit(static_cast<unsigned char>(c)) != 0
                   : std::isdigit(static_cast<unsigned char>(c)) != 0;
      });
    }
    return false;
  };
  auto where = [&](size_t at) { return fmt::format(" at byte {}", at); };
  while (i < n) {
    if (xml[i] != '<') {
      if (xml[i] == '&' && !entity_ok(i)) return "bad entity" + where(i);
      if (stack.empty() && !std::isspace(static_cast<unsigned char>(xml[i])))
        return "text outside the root element" + where(i);
      ++i;
      continue;
    }
    if (xml.compare(i, 5, "<?xml") == 0) {
      if (i != 0) return "XML declaration not at the start";
      size_t end = xml.find("?>", i);
      if (end == std::string::npos) return "unterminated declaration";
      i = end + 2;
      continue;
    }
    if (xml.compare(i, 4, "<!--") == 0) {
      size_t end = xml.find("-->", i);
      if (end == std::string::npos) return "unterminated comment" + where(i);
      i = end + 3;
      continue;
    }
    bool closing = i + 1 < n && xml[i + 1] == '/';
    size_t j = i + (closing ? 2 : 1), start = j;
    while (j < n && name_char(xml[j])) ++j;
    std::string name = xml.substr(start, j - start);
    if (name.empty()) return "tag without a name" + where(i);
    if (closing) {
      while (j < n && std::isspace(static_cast<unsigned char>(xml[j]))) ++j;
      if (j >= n || xml[j] != '>') return "malformed end tag" + where(i);
      if (stack.empty() || stack.back() != name)
        return "end tag </" + name + "> does not match" + where(i);
      stack.pop_back();
      i = j + 1;
      continue;
    }
    // Attributes.
    std::vector<std::string> seen;
    while (true) {
      size_t ws = j;
      while (j < n && std::isspace(static_cast<unsigned char>(xml[j]))) ++j;
      if (j >= n) return "unterminated tag <" + name + ">";
      if (xml[j] == '>' || xml.compare(j, 2, "/>") == 0) break;
      if (j == ws) return "attributes must be separated by space" + where(j);
      size_t a = j;
      while (j < n && name_char(xml[j])) ++j;
      std::string attr = xml.substr(a, j - a);
      if (attr.empty() || j >= n || xml[j] != '=') return "malformed attribute" + where(a);
      if (std::find(seen.begin(), seen.end(), attr) != seen.end())
        return "duplicate attribute " + attr + where(a);
      seen.push_back(attr);
      ++j;
      if (j >= n || (xml[j] != '"' && xml[j] != '\'')) return "unquoted attribute value" + where(j);
      char quote = xml[j++];
      while (j < n && xml[j] != quote) {
        if (xml[j] == '<') return "'<' in attribute value" + where(j);
        if (xml[j] == '&' && !entity_ok(j)) return "bad entity in attribute" + where(j);
        ++j;
      }
      if (j >= n) return "unterminated attribute value" + where(a);
      ++j;
    }
    bool self_closing = xml[j] == '/';
    if (stack.empty()) {
      if (++roots > 1) return "more than one root element" + where(i);
    }
    if (!self_closing) stack.push_back(name);
    i = j + (self_closing ? 2 : 1);
  }
  if (!stack.empty()) return "unclosed element <" + stack.back() + ">";
  if (roots != 1) return "no root element";
  return "";
}

// True when python3's minidom parses the file, or when python3 is not available (the C++ check
// above still runs everywhere).
inline bool python_xml_parses(const fs::path& file) {
  if (run_command("python3 -c pass >/dev/null 2>&1").exit_code != 0) return true;
  auto r = run_command(
      "python3 -c \"import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])\" '" +
      file.string() + "'");
  if (r.exit_code != 0) MESSAGE(r.err);
  return r.exit_code == 0;
}

inline model::ModelConfig tiny_route_config() {
  model::ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = 512;  // tok512
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 256;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  return c;
}

// MoLoRA on the MLP projections only: E experts, top-k, rank 4.
inline adapt::AdapterConfig tiny_molora_config(int64_t experts = 4, int64_t top_k = 2) {
  adapt::AdapterConfig config;
  adapt::TargetGroup g;
  g.name = "mlp";
  g.targets = {"gate_proj", "up_proj", "down_proj"};
  g.experts = experts;
  g.top_k = top_k;
  g.r = 4;
  g.alpha = 8;
  config.groups = {g};
  return config;
}

// A random model folder (with the real tok512.bin tokenizer) and, when adapter_dir is not empty,
// a MoLoRA adapter for it whose routers are scaled up so routing depends strongly on the input.
inline void write_tiny_route_model(const fs::path& model_dir, const fs::path& adapter_dir,
                                   uint64_t seed = 5, int64_t experts = 4) {
  torch::manual_seed(seed);
  auto config = tiny_route_config();
  model::CausalLM m(config, torch::TensorOptions().dtype(torch::kFloat32));
  m->init_random(0.3);
  model::save_model(model_dir, config, m);
  fs::copy_file(data_dir() / "models" / "tok512.bin", model_dir / "tokenizer.bin",
                fs::copy_options::overwrite_existing);
  if (adapter_dir.empty()) return;
  auto adapter_config = tiny_molora_config(experts);
  auto injected = adapt::inject_adapters(*m, adapter_config);
  torch::NoGradGuard no_grad;
  for (auto& [name, adapter] : injected.adapters)
    if (auto moe = std::dynamic_pointer_cast<adapt::MoloraAdapter>(adapter))
      moe->router_weight.normal_(0, 2.0);
  adapt::save_adapter(adapter_dir, *m, adapter_config, model_dir.string());
}

}  // namespace ming::test
