// Jinja source to tokens, as @huggingface/jinja's tokenize(): trim_blocks / lstrip_blocks
// preprocessing, {%- -%} whitespace control, comments, and the expression tokens inside tags.
// Every token carries the line of the original source it starts on, for error messages.
#pragma once

#include <string>
#include <vector>

namespace ming::text::jinja {

enum class TokenType {
  text,
  numeric_literal,
  string_literal,
  identifier,
  equals,
  open_paren,
  close_paren,
  open_statement,
  close_statement,
  open_expression,
  close_expression,
  open_square_bracket,
  close_square_bracket,
  open_curly_bracket,
  close_curly_bracket,
  comma,
  dot,
  colon,
  pipe,
  additive_operator,
  multiplicative_operator,
  exponentiation_operator,
  comparison_operator,
  unary_operator,
  comment,
};

struct Token {
  TokenType type;
  std::string value;
  int line = 1;
};

// Throws TemplateError "<origin> line N: ..." for malformed input (unterminated string or
// comment, bad escape, unexpected character).
std::vector<Token> tokenize(const std::string& source, const std::string& origin);

}  // namespace ming::text::jinja
