// Tokens to a syntax tree, with the grammar and operator precedence of @huggingface/jinja's
// parse(). Nesting deeper than kMaxNesting is refused, so hostile input cannot exhaust the stack.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ast.h"
#include "lexer.h"

namespace ming::text::jinja {

constexpr int kMaxNesting = 200;

// Throws TemplateError "<origin> line N: ..." naming the construct it cannot parse.
std::unique_ptr<Program> parse(const std::vector<Token>& tokens, const std::string& origin);

}  // namespace ming::text::jinja
