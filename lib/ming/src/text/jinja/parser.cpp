// The recursive-descent parser of @huggingface/jinja, with errors that name the source line.
#include "parser.h"

#include <algorithm>
#include <cstdlib>
#include <set>

#include <fmt/format.h>

#include "ming/text/jinja.h"

namespace ming::text::jinja {
namespace {

const char* describe(TokenType t) {
  switch (t) {
    case TokenType::text:
      return "text";
    case TokenType::numeric_literal:
      return "a number";
    case TokenType::string_literal:
      return "a string";
    case TokenType::identifier:
      return "a name";
    case TokenType::equals:
      return "'='";
    case TokenType::open_paren:
      return "'('";
    case TokenType::close_paren:
      return "')'";
    case TokenType::open_statement:
      return "'{%'";
    case TokenType::close_statement:
      return "'%}'";
    case TokenType::open_expression:
      return "'{{'";
    case TokenType::close_expression:
      return "'}}'";
    case TokenType::open_square_bracket:
      return "'['";
    case TokenType::close_square_bracket:
      return "']'";
    case TokenType::open_curly_bracket:
      return "'{'";
    case TokenType::close_curly_bracket:
      return "'}'";
    case TokenType::comma:
      return "','";
    case TokenType::dot:
      return "'.'";
    case TokenType::colon:
      return "':'";
    case TokenType::pipe:
      return "'|'";
    case TokenType::additive_operator:
    case TokenType::multiplicative_operator:
    case TokenType::exponentiation_operator:
    case TokenType::comparison_operator:
    case TokenType::unary_operator:
      return "an operator";
    case TokenType::comment:
      return "a comment";
  }
  return "?";
}

using ExprPtr = std::unique_ptr<Expr>;
using StmtPtr = std::unique_ptr<Stmt>;

class Parser {
 public:
  Parser(const std::vector<Token>& tokens, const std::string& origin)
      : tokens_(tokens), origin_(origin) {}

  std::unique_ptr<Program> run() {
    auto program = std::make_unique<Program>();
    while (current_ < tokens_.size()) program->body.push_back(parse_any());
    return program;
  }

 private:
  // Counts nesting of statements and expressions; refuses input nested deeper than kMaxNesting.
  struct Depth {
    explicit Depth(Parser& p) : p_(p) {
      if (++p_.depth_ > kMaxNesting)
        p_.error(fmt::format("nesting deeper than {} levels", kMaxNesting));
    }
    ~Depth() { --p_.depth_; }
    Parser& p_;
  };

  [[noreturn]] void error(const std::string& what) const {
    const int line = current_ < tokens_.size() ? tokens_[current_].line
                     : tokens_.empty()         ? 1
                                               : tokens_.back().line;
    throw TemplateError(fmt::format("{} line {}: {}", origin_, line, what));
  }

  const Token& peek() const {
    if (current_ >= tokens_.size()) error("unexpected end of template");
    return tokens_[current_];
  }
  int line() const {
    return current_ < tokens_.size() ? tokens_[current_].line
           : tokens_.empty()         ? 1
                                     : tokens_.back().line;
  }

  const Token& expect(TokenType type, const char* what) {
    if (current_ >= tokens_.size()) error(fmt::format("expected {} but the template ends", what));
    const Token& t = tokens_[current_];
    if (t.type != type)
      error(fmt::format("expected {}, found {}{}", what, describe(t.type),
                        t.type == TokenType::identifier ? " '" + t.value + "'" : ""));
    ++current_;
    return t;
  }

  bool is(TokenType type) const {
    return current_ < tokens_.size() && tokens_[current_].type == type;
  }
  bool is_identifier(const char* name, size_t offset = 0) const {
    return current_ + offset < tokens_.size() &&
           tokens_[current_ + offset].type == TokenType::identifier &&
           tokens_[current_ + offset].value == name;
  }
  bool is_statement(std::initializer_list<const char*> names) const {
    if (!is(TokenType::open_statement) || current_ + 1 >= tokens_.size()) return false;
    const Token& t = tokens_[current_ + 1];
    if (t.type != TokenType::identifier) return false;
    return std::any_of(names.begin(), names.end(), [&](const char* n) { return t.value == n; });
  }
  void expect_identifier(const char* name) {
    if (!is_identifier(name)) error(fmt::format("expected '{}'", name));
    ++current_;
  }

  // Statements up to one of `ends` ({% end... %}); an error naming `opener` if the template
  // ends first.
  std::vector<StmtPtr> block_until(std::initializer_list<const char*> ends, const char* opener,
                                   int opener_line) {
    std::vector<StmtPtr> body;
    while (!is_statement(ends)) {
      if (current_ >= tokens_.size())
        throw TemplateError(
            fmt::format("{} line {}: '{{% {} %}}' is never closed", origin_, opener_line, opener));
      body.push_back(parse_any());
    }
    return body;
  }

  StmtPtr make(StmtKind kind, int line) {
    auto s = std::make_unique<Stmt>();
    s->kind = kind;
    s->line = line;
    return s;
  }
  ExprPtr make(ExprKind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  StmtPtr parse_any() {
    Depth depth(*this);
    const Token& t = peek();
    switch (t.type) {
      case TokenType::comment: {
        auto s = make(StmtKind::comment, t.line);
        ++current_;
        return s;
      }
      case TokenType::text: {
        auto s = make(StmtKind::text, t.line);
        s->text = t.value;
        ++current_;
        return s;
      }
      case TokenType::open_statement:
        return parse_statement();
      case TokenType::open_expression: {
        auto s = make(StmtKind::output, t.line);
        ++current_;
        s->expr = parse_expression();
        expect(TokenType::close_expression, "'}}'");
        return s;
      }
      default:
        error(fmt::format("unexpected {}", describe(t.type)));
    }
  }

  StmtPtr parse_statement() {
    const int start = line();
    expect(TokenType::open_statement, "'{%'");
    const Token& t = peek();
    if (t.type != TokenType::identifier)
      error(fmt::format("expected a statement name after '{{%', found {}", describe(t.type)));
    const std::string name = t.value;
    ++current_;
    StmtPtr result;
    if (name == "set") {
      result = parse_set(start);
    } else if (name == "if") {
      result = parse_if(start);
      expect(TokenType::open_statement, "'{%'");
      expect_identifier("endif");
      expect(TokenType::close_statement, "'%}'");
    } else if (name == "macro") {
      result = make(StmtKind::macro, start);
      const Token& n = peek();
      if (n.type != TokenType::identifier) error("expected the macro's name");
      result->text = n.value;
      ++current_;
      result->params = parse_args(true);
      expect(TokenType::close_statement, "'%}'");
      result->body = block_until({"endmacro"}, "macro", start);
      expect(TokenType::open_statement, "'{%'");
      expect_identifier("endmacro");
      expect(TokenType::close_statement, "'%}'");
    } else if (name == "for") {
      result = parse_for(start);
      expect(TokenType::open_statement, "'{%'");
      expect_identifier("endfor");
      expect(TokenType::close_statement, "'%}'");
    } else if (name == "call") {
      result = make(StmtKind::call_block, start);
      if (is(TokenType::open_paren)) {
        result->params = parse_args(true);
        result->text = "with parameters";
      }
      auto callee = parse_primary();
      if (callee->kind != ExprKind::identifier) error("expected a macro name after 'call'");
      auto call = make(ExprKind::call, callee->line);
      call->items = parse_args(false);
      call->a = std::move(callee);
      result->expr = std::move(call);
      expect(TokenType::close_statement, "'%}'");
      result->body = block_until({"endcall"}, "call", start);
      expect(TokenType::open_statement, "'{%'");
      expect_identifier("endcall");
      expect(TokenType::close_statement, "'%}'");
    } else if (name == "break" || name == "continue") {
      result = make(name == "break" ? StmtKind::break_ : StmtKind::continue_, start);
      expect(TokenType::close_statement, "'%}'");
    } else if (name == "filter") {
      result = make(StmtKind::filter_block, start);
      auto filter = parse_primary();
      if (filter->kind == ExprKind::identifier && is(TokenType::open_paren))
        filter = parse_call(std::move(filter));
      result->expr = std::move(filter);
      expect(TokenType::close_statement, "'%}'");
      result->body = block_until({"endfilter"}, "filter", start);
      expect(TokenType::open_statement, "'{%'");
      expect_identifier("endfilter");
      expect(TokenType::close_statement, "'%}'");
    } else {
      --current_;
      error(
          fmt::format("unsupported statement '{{% {} %}}' (this Jinja subset has set, if, for, "
                      "macro, call, filter, break, continue)",
                      name));
    }
    return result;
  }

  StmtPtr parse_set(int start) {
    auto s = make(StmtKind::set, start);
    s->target = parse_expression_sequence(false);
    if (is(TokenType::equals)) {
      ++current_;
      s->expr = parse_expression_sequence(false);
    } else {
      expect(TokenType::close_statement, "'=' or '%}'");
      s->body = block_until({"endset"}, "set", start);
      expect(TokenType::open_statement, "'{%'");
      expect_identifier("endset");
    }
    expect(TokenType::close_statement, "'%}'");
    return s;
  }

  StmtPtr parse_if(int start) {
    auto s = make(StmtKind::if_, start);
    s->expr = parse_expression();
    expect(TokenType::close_statement, "'%}'");
    s->body = block_until({"elif", "else", "endif"}, "if", start);
    if (is_statement({"elif"})) {
      const int elif_line = line();
      current_ += 2;
      s->alternate.push_back(parse_if(elif_line));
    } else if (is_statement({"else"})) {
      current_ += 2;
      expect(TokenType::close_statement, "'%}'");
      s->alternate = block_until({"endif"}, "if", start);
    }
    return s;
  }

  StmtPtr parse_for(int start) {
    auto s = make(StmtKind::for_, start);
    s->target = parse_expression_sequence(true);
    if (s->target->kind != ExprKind::identifier && s->target->kind != ExprKind::tuple_literal)
      error("expected a name or names for the loop variable");
    if (!is_identifier("in")) error("expected 'in' after the loop variable");
    ++current_;
    s->expr = parse_expression();
    expect(TokenType::close_statement, "'%}'");
    s->body = block_until({"endfor", "else"}, "for", start);
    if (is_statement({"else"})) {
      current_ += 2;
      expect(TokenType::close_statement, "'%}'");
      s->alternate = block_until({"endfor"}, "for", start);
    }
    return s;
  }

  ExprPtr parse_expression_sequence(bool primary) {
    const int start = line();
    auto first = primary ? parse_primary() : parse_expression();
    if (!is(TokenType::comma)) return first;
    auto tuple = make(ExprKind::tuple_literal, start);
    tuple->items.push_back(std::move(first));
    while (is(TokenType::comma)) {
      ++current_;
      tuple->items.push_back(primary ? parse_primary() : parse_expression());
    }
    return tuple;
  }

  ExprPtr parse_expression() {
    Depth depth(*this);
    auto a = parse_or();
    if (is_identifier("if")) {
      const int l = line();
      ++current_;
      auto test = parse_or();
      if (is_identifier("else")) {
        ++current_;
        auto e = make(ExprKind::ternary, l);
        e->a = std::move(test);
        e->b = std::move(a);
        e->c = parse_expression();
        return e;
      }
      auto e = make(ExprKind::select, l);
      e->a = std::move(a);
      e->b = std::move(test);
      return e;
    }
    return a;
  }

  ExprPtr binary(std::string op, ExprPtr left, ExprPtr right, int l) {
    auto e = make(ExprKind::binary, l);
    e->text = std::move(op);
    e->a = std::move(left);
    e->b = std::move(right);
    return e;
  }

  ExprPtr parse_or() {
    auto left = parse_and();
    while (is_identifier("or")) {
      const int l = line();
      ++current_;
      left = binary("or", std::move(left), parse_and(), l);
    }
    return left;
  }

  ExprPtr parse_and() {
    auto left = parse_not();
    while (is_identifier("and")) {
      const int l = line();
      ++current_;
      left = binary("and", std::move(left), parse_not(), l);
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_identifier("not")) {
      Depth depth(*this);
      const int l = line();
      ++current_;
      auto e = make(ExprKind::unary, l);
      e->text = "not";
      e->a = parse_not();
      return e;
    }
    return parse_comparison();
  }

  ExprPtr parse_comparison() {
    auto left = parse_additive();
    while (true) {
      const int l = line();
      std::string op;
      if (is_identifier("not") && is_identifier("in", 1)) {
        op = "not in";
        current_ += 2;
      } else if (is_identifier("in")) {
        op = "in";
        ++current_;
      } else if (is(TokenType::comparison_operator)) {
        op = tokens_[current_++].value;
      } else {
        break;
      }
      left = binary(op, std::move(left), parse_additive(), l);
    }
    return left;
  }

  ExprPtr parse_additive() {
    auto left = parse_multiplicative();
    while (is(TokenType::additive_operator)) {
      const int l = line();
      std::string op = tokens_[current_++].value;
      left = binary(op, std::move(left), parse_multiplicative(), l);
    }
    return left;
  }

  ExprPtr parse_multiplicative() {
    auto left = parse_power();
    while (is(TokenType::multiplicative_operator)) {
      const int l = line();
      std::string op = tokens_[current_++].value;
      left = binary(op, std::move(left), parse_power(), l);
    }
    return left;
  }

  ExprPtr parse_power() {
    auto left = parse_test();
    while (is(TokenType::exponentiation_operator)) {
      const int l = line();
      ++current_;
      left = binary("**", std::move(left), parse_test(), l);
    }
    return left;
  }

  ExprPtr parse_test() {
    auto operand = parse_filter();
    while (is_identifier("is")) {
      const int l = line();
      ++current_;
      const bool negate = is_identifier("not");
      if (negate) ++current_;
      auto name = parse_primary();
      if (name->kind != ExprKind::identifier) error("expected a test name after 'is'");
      auto e = make(ExprKind::test, l);
      e->flag = negate;
      e->text = name->text;
      e->a = std::move(operand);
      operand = std::move(e);
    }
    return operand;
  }

  ExprPtr parse_filter() {
    auto operand = parse_unary_sign();
    while (is(TokenType::pipe)) {
      const int l = line();
      ++current_;
      auto filter = parse_primary();
      if (filter->kind != ExprKind::identifier) error("expected a filter name after '|'");
      if (is(TokenType::open_paren)) filter = parse_call(std::move(filter));
      auto e = make(ExprKind::filter, l);
      e->a = std::move(operand);
      e->b = std::move(filter);
      operand = std::move(e);
    }
    return operand;
  }

  ExprPtr parse_unary_sign() {
    if (current_ < tokens_.size()) {
      const Token& t = tokens_[current_];
      if ((t.type == TokenType::unary_operator || t.type == TokenType::additive_operator) &&
          (t.value == "-" || t.value == "+")) {
        Depth depth(*this);
        ++current_;
        auto e = make(ExprKind::unary, t.line);
        e->text = t.value;
        e->a = parse_unary_sign();
        return e;
      }
    }
    auto member = parse_member(parse_primary());
    if (is(TokenType::open_paren)) return parse_call(std::move(member));
    return member;
  }

  ExprPtr parse_call(ExprPtr callee) {
    Depth depth(*this);
    auto e = make(ExprKind::call, line());
    e->items = parse_args(false);
    e->a = std::move(callee);
    auto expr = parse_member(std::move(e));
    if (is(TokenType::open_paren)) return parse_call(std::move(expr));
    return expr;
  }

  // A call's arguments, or (parameters) a macro's parameter list.
  std::vector<ExprPtr> parse_args(bool parameters) {
    expect(TokenType::open_paren, "'('");
    std::vector<ExprPtr> args;
    std::set<std::string> names;
    bool saw_keyword = false, saw_spread = false;
    while (!is(TokenType::close_paren)) {
      if (current_ >= tokens_.size()) error("argument list is never closed with ')'");
      const int l = line();
      const bool keyword_spread = is(TokenType::exponentiation_operator);
      const bool positional_spread =
          is(TokenType::multiplicative_operator) && tokens_[current_].value == "*";
      if (parameters && (keyword_spread || positional_spread))
        error("argument unpacking is not allowed in parameter declarations");
      if (keyword_spread) {
        ++current_;
        auto e = make(ExprKind::keyword_spread, l);
        e->a = parse_expression();
        args.push_back(std::move(e));
        if (is(TokenType::comma)) ++current_;
        if (!is(TokenType::close_paren)) error("'**' must be applied to the final argument");
        break;
      }
      ExprPtr argument;
      if (positional_spread) {
        if (saw_spread) error("only one '*' argument unpacking is allowed");
        saw_spread = true;
        ++current_;
        argument = make(ExprKind::spread, l);
        argument->a = parse_expression();
      } else {
        argument = parse_expression();
        if (is(TokenType::equals)) {
          ++current_;
          if (argument->kind != ExprKind::identifier)
            error(parameters ? "expected a name for the parameter"
                             : "expected a name for the keyword argument");
          auto kw = make(ExprKind::keyword_argument, l);
          kw->text = argument->text;
          kw->a = parse_expression();
          argument = std::move(kw);
        }
        if (parameters) {
          if (argument->kind != ExprKind::identifier &&
              argument->kind != ExprKind::keyword_argument)
            error("expected a name for the parameter");
          if (!names.insert(argument->text).second)
            error(fmt::format("duplicate parameter name '{}'", argument->text));
        }
        if (argument->kind == ExprKind::keyword_argument) {
          saw_keyword = true;
        } else if (saw_keyword) {
          error(parameters ? "a parameter without default follows one with a default"
                           : "positional arguments must come before keyword arguments");
        } else if (saw_spread) {
          error("positional arguments must not follow '*' argument unpacking");
        }
      }
      args.push_back(std::move(argument));
      if (is(TokenType::comma)) ++current_;
    }
    expect(TokenType::close_paren, "')'");
    return args;
  }

  ExprPtr parse_subscript() {
    const int l = line();
    std::vector<ExprPtr> parts;
    bool is_slice = false;
    while (!is(TokenType::close_square_bracket)) {
      if (current_ >= tokens_.size()) error("'[' is never closed with ']'");
      if (is(TokenType::colon)) {
        parts.push_back(nullptr);
        ++current_;
        is_slice = true;
      } else {
        parts.push_back(parse_expression());
        if (is(TokenType::colon)) {
          ++current_;
          is_slice = true;
        }
      }
    }
    if (parts.empty()) error("expected an index or a slice inside '[]'");
    if (!is_slice) return std::move(parts[0]);
    if (parts.size() > 3) error("a slice has at most three parts (start:stop:step)");
    auto e = make(ExprKind::slice, l);
    e->a = std::move(parts[0]);
    if (parts.size() > 1) e->b = std::move(parts[1]);
    if (parts.size() > 2) e->c = std::move(parts[2]);
    return e;
  }

  ExprPtr parse_member(ExprPtr object) {
    while (is(TokenType::dot) || is(TokenType::open_square_bracket)) {
      Depth depth(*this);
      const int l = line();
      const bool computed = is(TokenType::open_square_bracket);
      ++current_;
      auto e = make(ExprKind::member, l);
      e->flag = computed;
      if (computed) {
        e->b = parse_subscript();
        expect(TokenType::close_square_bracket, "']'");
      } else {
        e->b = parse_primary();
        if (e->b->kind != ExprKind::identifier && e->b->kind != ExprKind::integer_literal)
          error("expected a name or an integer after '.'");
      }
      e->a = std::move(object);
      object = std::move(e);
    }
    return object;
  }

  ExprPtr parse_primary() {
    Depth depth(*this);
    const Token& t = peek();
    ++current_;
    switch (t.type) {
      case TokenType::numeric_literal: {
        const bool is_float = t.value.find('.') != std::string::npos;
        auto e = make(is_float ? ExprKind::float_literal : ExprKind::integer_literal, t.line);
        e->number = std::strtod(t.value.c_str(), nullptr);
        return e;
      }
      case TokenType::string_literal: {
        auto e = make(ExprKind::string_literal, t.line);
        e->text = t.value;
        while (is(TokenType::string_literal)) e->text += tokens_[current_++].value;
        return e;
      }
      case TokenType::identifier: {
        auto e = make(ExprKind::identifier, t.line);
        e->text = t.value;
        return e;
      }
      case TokenType::open_paren: {
        auto e = parse_expression_sequence(false);
        expect(TokenType::close_paren, "')'");
        return e;
      }
      case TokenType::open_square_bracket: {
        auto e = make(ExprKind::array_literal, t.line);
        while (!is(TokenType::close_square_bracket)) {
          if (current_ >= tokens_.size()) error("'[' is never closed with ']'");
          e->items.push_back(parse_expression());
          if (is(TokenType::comma)) ++current_;
        }
        ++current_;
        return e;
      }
      case TokenType::open_curly_bracket: {
        auto e = make(ExprKind::object_literal, t.line);
        while (!is(TokenType::close_curly_bracket)) {
          if (current_ >= tokens_.size()) error("'{' is never closed with '}'");
          auto key = parse_expression();
          expect(TokenType::colon, "':' between key and value");
          auto value = parse_expression();
          e->entries.emplace_back(std::move(key), std::move(value));
          if (is(TokenType::comma)) ++current_;
        }
        ++current_;
        return e;
      }
      default:
        --current_;
        error(fmt::format("unexpected {}", describe(t.type)));
    }
  }

  const std::vector<Token>& tokens_;
  const std::string& origin_;
  size_t current_ = 0;
  int depth_ = 0;
};

}  // namespace

std::unique_ptr<Program> parse(const std::vector<Token>& tokens, const std::string& origin) {
  return Parser(tokens, origin).run();
}

}  // namespace ming::text::jinja
