// The syntax tree of a parsed template: expressions and statements, each with its source line.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ming::text::jinja {

enum class ExprKind {
  integer_literal,   // number
  float_literal,     // number
  string_literal,    // text
  identifier,        // text
  array_literal,     // items
  tuple_literal,     // items
  object_literal,    // entries
  member,            // a[b] (computed) or a.b; b may be a slice
  slice,             // a:b:c, each optional
  call,              // a(items)
  keyword_argument,  // text=a
  spread,            // *a
  keyword_spread,    // **a
  unary,             // text a
  binary,            // a text b
  filter,            // a | b, b an identifier or a call of one
  test,              // a is [not] text
  select,            // a if b (no else: undefined when b is false)
  ternary,           // b if a else c
};

struct Expr {
  ExprKind kind;
  int line = 1;
  std::string text;
  double number = 0;
  bool flag = false;  // member: computed; test: negated
  std::unique_ptr<Expr> a, b, c;
  std::vector<std::unique_ptr<Expr>> items;
  std::vector<std::pair<std::unique_ptr<Expr>, std::unique_ptr<Expr>>> entries;
};

enum class StmtKind {
  text,        // text
  output,      // {{ expr }}
  set,         // target = expr, or target + body (block set)
  if_,         // expr, body, alternate
  for_,        // target in expr, body, alternate (the else block)
  macro,       // text(params) body
  call_block,  // {% call(params) expr %} body
  break_,
  continue_,
  filter_block,  // {% filter expr %} body
  comment,
};

struct Stmt {
  StmtKind kind;
  int line = 1;
  std::string text;
  std::unique_ptr<Expr> expr;
  std::unique_ptr<Expr> target;
  std::vector<std::unique_ptr<Expr>> params;
  std::vector<std::unique_ptr<Stmt>> body, alternate;
};

struct Program {
  std::vector<std::unique_ptr<Stmt>> body;
};

}  // namespace ming::text::jinja
