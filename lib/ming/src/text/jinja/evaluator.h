// Renders a parsed template: the interpreter of @huggingface/jinja (scoping, truthiness,
// operators, filters, tests, methods) over the values of value.h. Rendering is bounded: at most
// kMaxDepth nested evaluations (macro recursion included), kMaxSteps evaluation steps and
// kMaxOutputBytes of text, each an error rather than a hang or a crash.
#pragma once

#include <string>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "ast.h"
#include "value.h"

namespace ming::text::jinja {

constexpr int kMaxDepth = 200;
constexpr long long kMaxSteps = 20'000'000;
constexpr size_t kMaxOutputBytes = 64u << 20;

class Environment {
 public:
  explicit Environment(Environment* parent = nullptr) : parent_(parent) {}
  void set(const std::string& name, Value value) { vars_[name] = std::move(value); }
  Value lookup(const std::string& name) const;

 private:
  std::unordered_map<std::string, Value> vars_;
  Environment* parent_;
};

std::string render_program(const Program& program, const nlohmann::ordered_json& context,
                           const std::string& origin);

}  // namespace ming::text::jinja
