// A Jinja interpreter for the chat templates Hugging Face models ship in tokenizer_config.json.
//
// It implements the language subset of Hugging Face's reference renderer `@huggingface/jinja`
// (what transformers.js and the Hub use) with that renderer's semantics, so a template renders
// byte for byte as it does there: statements if/elif/else, for (loop.*, else, break, continue,
// inline `if` filters), set (including block set and namespace attributes), macro, call, filter;
// expressions with Python-style operators, slices, ternaries, filters and tests; string, list
// and dict methods; the globals raise_exception, range, namespace and strftime_now. The source is
// preprocessed with trim_blocks and lstrip_blocks, as transformers does.
//
// Anything outside that subset is an error naming the template line, never a silently different
// prompt. Parsing and rendering are bounded (nesting depth, macro recursion, output size), so a
// hostile template fails cleanly.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "ming/core/error.h"

namespace ming::text::jinja {

// A template that cannot be parsed or rendered. The message starts with "<origin> line N:".
class TemplateError : public UsageError {
 public:
  using UsageError::UsageError;
};

struct Program;

class Template {
 public:
  // Parses `source`; `origin` names it in errors (e.g. "model/tokenizer_config.json
  // chat_template").
  Template(const std::string& source, std::string origin);
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // Renders with the JSON object's members as variables (messages, add_generation_prompt,
  // bos_token, tools, ...). Throws TemplateError, including for raise_exception().
  std::string render(const nlohmann::ordered_json& context) const;

  const std::string& origin() const { return origin_; }

 private:
  std::string origin_;
  std::unique_ptr<Program> program_;
};

}  // namespace ming::text::jinja
