// The tokenizer of @huggingface/jinja, step for step, on UTF-8 text with line tracking.
#include "lexer.h"

#include <fmt/format.h>

#include "ming/text/jinja.h"
#include "value.h"

namespace ming::text::jinja {
namespace {

// Source text with the original line of every byte, kept through preprocessing.
struct Source {
  std::string text;
  std::vector<int> lines;
  void push(char c, int line) {
    text += c;
    lines.push_back(line);
  }
};

bool at(const Source& s, size_t i, const char* seq) {
  for (size_t k = 0; seq[k]; ++k)
    if (i + k >= s.text.size() || s.text[i + k] != seq[k]) return false;
  return true;
}

bool is_space_at(const std::string& s, size_t i, size_t* len) {
  return i < s.size() && is_js_space(decode_at(s, i, len));
}

// transformers' Jinja environment options trim_blocks and lstrip_blocks, and the removal of
// {% generation %} markers, as @huggingface/jinja's preprocess() does them with regular
// expressions on the whole source.
Source preprocess(const std::string& raw) {
  Source s;
  int line = 1;
  const size_t n = !raw.empty() && raw.back() == '\n' ? raw.size() - 1 : raw.size();
  for (size_t i = 0; i < n; ++i) {
    s.push(raw[i], line);
    if (raw[i] == '\n') ++line;
  }
  // lstrip_blocks: /^[ \t]*({[#%-])/gm -> "$1"
  Source a;
  for (size_t i = 0; i < s.text.size();) {
    const bool line_start = i == 0 || s.text[i - 1] == '\n' || s.text[i - 1] == '\r';
    if (line_start) {
      size_t j = i;
      while (j < s.text.size() && (s.text[j] == ' ' || s.text[j] == '\t')) ++j;
      if (j > i && j + 1 < s.text.size() && s.text[j] == '{' &&
          (s.text[j + 1] == '#' || s.text[j + 1] == '%' || s.text[j + 1] == '-')) {
        i = j;
        continue;
      }
    }
    a.push(s.text[i], s.lines[i]);
    ++i;
  }
  // trim_blocks: /([#%-]})\n/g -> "$1"
  Source b;
  for (size_t i = 0; i < a.text.size(); ++i) {
    b.push(a.text[i], a.lines[i]);
    if (a.text[i] == '}' && i > 0 &&
        (a.text[i - 1] == '#' || a.text[i - 1] == '%' || a.text[i - 1] == '-')) {
      if (i + 1 < a.text.size() && a.text[i + 1] == '\n') ++i;
    }
  }
  // /(\s*){%(-?)\s*(?:end)?generation\s*(-?)%}(\s*)/gs -> (lstrip ? "" : before) + (rstrip ?
  // "" : after)
  Source c;
  size_t copied = 0;  // b.text[copied..] not yet copied to c
  size_t i = 0;
  while (i < b.text.size()) {
    if (!at(b, i, "{%")) {
      ++i;
      continue;
    }
    size_t j = i + 2, len = 1;
    const bool lstrip = j < b.text.size() && b.text[j] == '-';
    if (lstrip) ++j;
    while (is_space_at(b.text, j, &len)) j += len;
    if (at(b, j, "end")) j += 3;
    if (!at(b, j, "generation")) {
      ++i;
      continue;
    }
    j += 10;
    while (is_space_at(b.text, j, &len)) j += len;
    const bool rstrip = j < b.text.size() && b.text[j] == '-';
    if (rstrip) ++j;
    if (!at(b, j, "%}")) {
      ++i;
      continue;
    }
    j += 2;
    // The whitespace run before the tag, back to what was already consumed.
    size_t before = i;
    while (before > copied) {
      size_t p = before - 1;
      while (p > copied && (static_cast<unsigned char>(b.text[p]) & 0xC0) == 0x80) --p;
      if (!is_space_at(b.text, p, &len) || p + len != before) break;
      before = p;
    }
    size_t after = j;
    while (is_space_at(b.text, after, &len)) after += len;
    for (size_t k = copied; k < (lstrip ? before : i); ++k) c.push(b.text[k], b.lines[k]);
    if (!rstrip)
      for (size_t k = j; k < after; ++k) c.push(b.text[k], b.lines[k]);
    copied = i = after;
  }
  for (size_t k = copied; k < b.text.size(); ++k) c.push(b.text[k], b.lines[k]);
  return c;
}

struct Mapping {
  const char* seq;
  TokenType type;
};

const Mapping kOrderedMappingTable[] = {
    {"{%", TokenType::open_statement},
    {"%}", TokenType::close_statement},
    {"{{", TokenType::open_expression},
    {"}}", TokenType::close_expression},
    {"(", TokenType::open_paren},
    {")", TokenType::close_paren},
    {"{", TokenType::open_curly_bracket},
    {"}", TokenType::close_curly_bracket},
    {"[", TokenType::open_square_bracket},
    {"]", TokenType::close_square_bracket},
    {",", TokenType::comma},
    {".", TokenType::dot},
    {":", TokenType::colon},
    {"|", TokenType::pipe},
    {"<=", TokenType::comparison_operator},
    {">=", TokenType::comparison_operator},
    {"==", TokenType::comparison_operator},
    {"!=", TokenType::comparison_operator},
    {"<", TokenType::comparison_operator},
    {">", TokenType::comparison_operator},
    {"+", TokenType::additive_operator},
    {"-", TokenType::additive_operator},
    {"~", TokenType::additive_operator},
    {"**", TokenType::exponentiation_operator},
    {"*", TokenType::multiplicative_operator},
    {"//", TokenType::multiplicative_operator},
    {"/", TokenType::multiplicative_operator},
    {"%", TokenType::multiplicative_operator},
    {"=", TokenType::equals},
};

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_word(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

class Lexer {
 public:
  Lexer(const std::string& source, const std::string& origin)
      : src_(preprocess(source)), origin_(origin) {}

  std::vector<Token> run() {
    const std::string& s = src_.text;
    while (pos_ < s.size()) {
      const TokenType* last = tokens_.empty() ? nullptr : &tokens_.back().type;
      if (!last || *last == TokenType::close_statement || *last == TokenType::close_expression ||
          *last == TokenType::comment) {
        const size_t start = pos_;
        while (pos_ < s.size() &&
               !(s[pos_] == '{' && pos_ + 1 < s.size() &&
                 (s[pos_ + 1] == '%' || s[pos_ + 1] == '{' || s[pos_ + 1] == '#')))
          ++pos_;
        if (pos_ > start) {
          push(TokenType::text, s.substr(start, pos_ - start), start);
          continue;
        }
      }
      if (at(src_, pos_, "{#")) {
        comment();
        continue;
      }
      if (at(src_, pos_, "{%-")) {
        strip_trailing_whitespace();
        push(TokenType::open_statement, "{%", pos_);
        pos_ += 3;
        continue;
      }
      if (at(src_, pos_, "{{-")) {
        strip_trailing_whitespace();
        push(TokenType::open_expression, "{{", pos_);
        curly_depth_ = 0;
        pos_ += 3;
        continue;
      }
      skip_whitespace();
      if (at(src_, pos_, "-%}")) {
        push(TokenType::close_statement, "%}", pos_);
        pos_ += 3;
        skip_whitespace();
        continue;
      }
      if (at(src_, pos_, "-}}")) {
        push(TokenType::close_expression, "}}", pos_);
        pos_ += 3;
        skip_whitespace();
        continue;
      }
      if (pos_ >= s.size()) break;
      const char c = s[pos_];
      if ((c == '-' || c == '+') && signed_number_allowed()) {
        if (tokens_.empty() || tokens_.back().type == TokenType::text)
          error(pos_, fmt::format("unexpected character '{}'", c));
        const size_t start = pos_++;
        std::string num = digits();
        if (!num.empty() && pos_ + 1 < s.size() && s[pos_] == '.' && is_digit(s[pos_ + 1])) {
          ++pos_;
          num += "." + digits();
        }
        push(num.empty() ? TokenType::unary_operator : TokenType::numeric_literal,
             std::string(1, c) + num, start);
        continue;
      }
      if (mapped()) continue;
      if (c == '\'' || c == '"') {
        string_literal(c);
        continue;
      }
      if (is_digit(c)) {
        const size_t start = pos_;
        std::string num = digits();
        if ((tokens_.empty() || tokens_.back().type != TokenType::dot) && pos_ + 1 < s.size() &&
            s[pos_] == '.' && is_digit(s[pos_ + 1])) {
          ++pos_;
          num += "." + digits();
        }
        push(TokenType::numeric_literal, num, start);
        continue;
      }
      if (is_word(c)) {
        const size_t start = pos_;
        while (pos_ < s.size() && is_word(s[pos_])) ++pos_;
        push(TokenType::identifier, s.substr(start, pos_ - start), start);
        continue;
      }
      size_t len = 1;
      decode_at(s, pos_, &len);
      error(pos_, fmt::format("unexpected character '{}'", s.substr(pos_, len)));
    }
    return std::move(tokens_);
  }

 private:
  [[noreturn]] void error(size_t pos, const std::string& what) const {
    const int line = src_.lines.empty()        ? 1
                     : pos < src_.lines.size() ? src_.lines[pos]
                                               : src_.lines.back();
    throw TemplateError(fmt::format("{} line {}: {}", origin_, line, what));
  }

  void push(TokenType type, std::string value, size_t pos) {
    const int line = pos < src_.lines.size() ? src_.lines[pos]
                     : src_.lines.empty()    ? 1
                                             : src_.lines.back();
    tokens_.push_back({type, std::move(value), line});
  }

  // A '-' or '+' starts a signed number or is a unary sign unless it follows an operand.
  bool signed_number_allowed() const {
    if (tokens_.empty()) return true;
    switch (tokens_.back().type) {
      case TokenType::identifier:
      case TokenType::numeric_literal:
      case TokenType::string_literal:
      case TokenType::close_paren:
      case TokenType::close_square_bracket:
        return false;
      default:
        return true;
    }
  }

  bool mapped() {
    for (const auto& m : kOrderedMappingTable) {
      if (m.type == TokenType::close_expression && curly_depth_ > 0) continue;
      if (!at(src_, pos_, m.seq)) continue;
      push(m.type, m.seq, pos_);
      if (m.type == TokenType::open_expression) curly_depth_ = 0;
      if (m.type == TokenType::open_curly_bracket) ++curly_depth_;
      if (m.type == TokenType::close_curly_bracket) --curly_depth_;
      pos_ += std::char_traits<char>::length(m.seq);
      return true;
    }
    return false;
  }

  std::string digits() {
    const size_t start = pos_;
    while (pos_ < src_.text.size() && is_digit(src_.text[pos_])) ++pos_;
    return src_.text.substr(start, pos_ - start);
  }

  void skip_whitespace() {
    size_t len = 1;
    while (is_space_at(src_.text, pos_, &len)) pos_ += len;
  }

  void strip_trailing_whitespace() {
    if (tokens_.empty() || tokens_.back().type != TokenType::text) return;
    tokens_.back().value = js_trim(tokens_.back().value, false, true);
    if (tokens_.back().value.empty()) tokens_.pop_back();
  }

  void comment() {
    const size_t start = pos_;
    pos_ += 2;
    const bool strip_before = pos_ < src_.text.size() && src_.text[pos_] == '-';
    if (strip_before) ++pos_;
    const size_t body = pos_;
    while (!at(src_, pos_, "#}")) {
      if (pos_ + 2 >= src_.text.size()) error(start, "comment '{#' is never closed");
      ++pos_;
    }
    std::string text = src_.text.substr(body, pos_ - body);
    const bool strip_after = !text.empty() && text.back() == '-';
    if (strip_after) text.pop_back();
    if (strip_before) strip_trailing_whitespace();
    push(TokenType::comment, text, start);
    pos_ += 2;
    if (strip_after) skip_whitespace();
  }

  void string_literal(char quote) {
    const std::string& s = src_.text;
    const size_t start = pos_++;
    std::string out;
    char32_t pending_high = 0;  // a \uD800-\uDBFF escape waiting for its low half
    const auto flush_high = [&] {
      if (pending_high) error(start, "string literal has an unpaired UTF-16 surrogate escape");
    };
    while (pos_ < s.size() && s[pos_] != quote) {
      if (s[pos_] == '\\') {
        ++pos_;
        if (pos_ >= s.size()) error(start, "string literal is never closed");
        const char e = s[pos_++];
        if (e == 'x' || e == 'u') {
          const size_t n = e == 'x' ? 2 : 4;
          if (pos_ + n > s.size()) error(pos_, "invalid hexadecimal escape sequence");
          const std::string hex = s.substr(pos_, n);
          if (hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
            error(pos_, fmt::format("invalid hexadecimal escape sequence \\{}{}", e, hex));
          pos_ += n;
          const auto unit = static_cast<char32_t>(std::stoul(hex, nullptr, 16));
          if (unit >= 0xD800 && unit <= 0xDBFF) {
            flush_high();
            pending_high = unit;
          } else if (unit >= 0xDC00 && unit <= 0xDFFF) {
            if (!pending_high)
              error(start, "string literal has an unpaired UTF-16 surrogate escape");
            append_utf8(out, 0x10000 + ((pending_high - 0xD800) << 10) + (unit - 0xDC00));
            pending_high = 0;
          } else {
            flush_high();
            append_utf8(out, unit);
          }
          continue;
        }
        flush_high();
        switch (e) {
          case 'n':
            out += '\n';
            break;
          case 't':
            out += '\t';
            break;
          case 'r':
            out += '\r';
            break;
          case 'b':
            out += '\b';
            break;
          case 'f':
            out += '\f';
            break;
          case 'v':
            out += '\v';
            break;
          case '\'':
          case '"':
          case '\\':
            out += e;
            break;
          default:
            error(pos_ - 1, fmt::format("unexpected escaped character '\\{}'", e));
        }
        continue;
      }
      flush_high();
      out += s[pos_++];
      if (pos_ >= s.size()) error(start, "string literal is never closed");
    }
    flush_high();
    if (pos_ >= s.size()) error(start, "string literal is never closed");
    ++pos_;  // the closing quote
    push(TokenType::string_literal, out, start);
  }

  Source src_;
  const std::string& origin_;
  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int curly_depth_ = 0;
};

}  // namespace

std::vector<Token> tokenize(const std::string& source, const std::string& origin) {
  return Lexer(source, origin).run();
}

}  // namespace ming::text::jinja
