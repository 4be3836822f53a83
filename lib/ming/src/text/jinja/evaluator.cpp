// The interpreter: statements, expressions, filters, tests and the methods of strings, lists and
// dicts, each as @huggingface/jinja's runtime evaluates it.
#include "evaluator.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <map>

#include <fmt/format.h>

#include "ming/text/jinja.h"

namespace ming::text::jinja {

Value Environment::lookup(const std::string& name) const {
  for (const Environment* e = this; e; e = e->parent_)
    if (auto it = e->vars_.find(name); it != e->vars_.end()) return it->second;
  return Value::undefined();
}

namespace {

struct BreakSignal {};
struct ContinueSignal {};

std::string ascii_upper(std::string s) {
  for (char& c : s)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return s;
}
std::string ascii_lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}
bool is_word_char(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

// String() of the wrapped JavaScript value, as `+` and `~` and join() use it.
std::string raw_string(const Value& v) {
  switch (v.type) {
    case Type::string:
      return v.string;
    case Type::integer:
    case Type::floating:
      return js_number(v.number);
    case Type::boolean:
      return v.boolean ? "true" : "false";
    case Type::null:
      return "null";
    case Type::undefined:
      return "undefined";
    default:
      return to_output(v);
  }
}

// Python's str.split on runs of whitespace.
std::vector<std::string> split_whitespace(const std::string& text, double maxsplit) {
  std::vector<std::string> out;
  const std::string s = js_trim(text, true, false);
  size_t i = 0, len = 1;
  while (i < s.size()) {
    size_t start = i;
    while (i < s.size() && !is_js_space(decode_at(s, i, &len))) i += len;
    if (maxsplit != -1 && out.size() >= maxsplit) {
      out.push_back(s.substr(start));
      break;
    }
    out.push_back(s.substr(start, i - start));
    while (i < s.size() && is_js_space(decode_at(s, i, &len))) i += len;
  }
  return out;
}

std::vector<std::string> split_on(const std::string& s, const std::string& sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t p = s.find(sep, start);
    if (p == std::string::npos) break;
    out.push_back(s.substr(start, p - start));
    start = p + sep.size();
  }
  out.push_back(s.substr(start));
  return out;
}

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += sep;
    out += parts[i];
  }
  return out;
}

// Python's slice semantics on a sequence of `n` items, as @huggingface/jinja's slice().
std::vector<size_t> slice_indices(size_t n, const Value& start_v, const Value& stop_v,
                                  const Value& step_v) {
  const long long len = static_cast<long long>(n);
  const long long step = step_v.type == Type::undefined ? 1 : static_cast<long long>(step_v.number);
  std::vector<size_t> out;
  if (step == 0) return out;
  long long start, stop;
  if (step > 0) {
    start = start_v.type == Type::undefined ? 0 : static_cast<long long>(start_v.number);
    stop = stop_v.type == Type::undefined ? len : static_cast<long long>(stop_v.number);
    start = start < 0 ? std::max(len + start, 0LL) : std::min(start, len);
    stop = stop < 0 ? std::max(len + stop, 0LL) : std::min(stop, len);
    for (long long i = start; i < stop; i += step) out.push_back(static_cast<size_t>(i));
  } else {
    start = start_v.type == Type::undefined ? len - 1 : static_cast<long long>(start_v.number);
    stop = stop_v.type == Type::undefined ? -1 : static_cast<long long>(stop_v.number);
    start = start < 0 ? std::max(len + start, -1LL) : std::min(start, len - 1);
    stop = stop < -1 ? std::max(len + stop, -1LL) : std::min(stop, len - 1);
    for (long long i = start; i > stop; i += step) out.push_back(static_cast<size_t>(i));
  }
  return out;
}

class Evaluator {
 public:
  explicit Evaluator(const std::string& origin) : origin_(origin) {}

  std::string run(const Program& program, Environment& env) {
    return exec_block(program.body, env).string;
  }

  void install_globals(Environment& env) {
    env.set("false", Value::from_bool(false));
    env.set("true", Value::from_bool(true));
    env.set("none", Value::null());
    env.set("False", Value::from_bool(false));
    env.set("True", Value::from_bool(true));
    env.set("None", Value::null());
    env.set("raise_exception", Value::callable([this](std::vector<Value>& args, Environment&) {
              std::vector<std::string> parts;
              for (const auto& a : args) parts.push_back(raw_string(a));
              error(fmt::format("raise_exception: {}", join(parts, ",")));
              return Value::undefined();
            }));
    env.set("range", Value::callable(
                         [this](std::vector<Value>& args, Environment&) { return range(args); }));
    env.set("strftime_now", Value::callable([this](std::vector<Value>& args, Environment&) {
              if (args.empty() || args[0].type != Type::string)
                error("strftime_now() expects a format string");
              return Value::str(strftime_now(args[0].string));
            }));
    env.set("namespace", Value::callable([this](std::vector<Value>& args, Environment&) {
              return make_namespace(args);
            }));
  }

 private:
  // ---- errors and limits ----------------------------------------------------------------

  [[noreturn]] void error(const std::string& what) const {
    throw TemplateError(fmt::format("{} line {}: {}", origin_, line_, what));
  }

  struct Guard {
    Guard(Evaluator& e, int line) : e_(e), saved_line_(e.line_) {
      e_.line_ = line;
      if (++e_.depth_ > kMaxDepth)
        e_.error(fmt::format("rendering nests deeper than {} levels (runaway macro recursion?)",
                             kMaxDepth));
      e_.count_step();
    }
    ~Guard() {
      --e_.depth_;
      e_.line_ = saved_line_;
    }
    Evaluator& e_;
    int saved_line_;
  };

  void append(std::string& out, const std::string& piece) const {
    check_size(out.size() + piece.size());
    out += piece;
  }
  void check_size(size_t bytes) const {
    if (bytes > kMaxOutputBytes)
      error(fmt::format("rendering produces more than {} bytes", kMaxOutputBytes));
  }
  Value checked_string(std::string s) const {
    check_size(s.size());
    return Value::str(std::move(s));
  }
  void count_step() {
    if (++steps_ > kMaxSteps) error(fmt::format("rendering takes more than {} steps", kMaxSteps));
  }

  // ---- statements -----------------------------------------------------------------------

  Value exec_block(const std::vector<std::unique_ptr<Stmt>>& body, Environment& env) {
    std::string out;
    for (const auto& s : body) {
      const Value v = exec(*s, env);
      if (v.type != Type::null && v.type != Type::undefined) append(out, to_output(v));
    }
    return Value::str(std::move(out));
  }

  Value exec(const Stmt& s, Environment& env) {
    Guard guard(*this, s.line);
    switch (s.kind) {
      case StmtKind::text:
        return Value::str(s.text);
      case StmtKind::output:
        return eval(*s.expr, env);
      case StmtKind::comment:
        return Value::null();
      case StmtKind::set:
        exec_set(s, env);
        return Value::null();
      case StmtKind::if_:
        return exec_block(eval(*s.expr, env).truthy() ? s.body : s.alternate, env);
      case StmtKind::for_:
        return exec_for(s, env);
      case StmtKind::macro:
        env.set(s.text, make_macro(s));
        return Value::null();
      case StmtKind::call_block:
        return exec_call_block(s, env);
      case StmtKind::break_:
        throw BreakSignal{};
      case StmtKind::continue_:
        throw ContinueSignal{};
      case StmtKind::filter_block: {
        const Value body = exec_block(s.body, env);
        return apply_filter(body, *s.expr, env);
      }
    }
    return Value::null();
  }

  void exec_set(const Stmt& s, Environment& env) {
    const Value rhs = s.expr ? eval(*s.expr, env) : exec_block(s.body, env);
    const Expr& target = *s.target;
    if (target.kind == ExprKind::identifier) {
      env.set(target.text, rhs);
    } else if (target.kind == ExprKind::tuple_literal) {
      if (!rhs.is_array()) error(fmt::format("cannot unpack {} in set", type_name(rhs.type)));
      if (rhs.array->size() != target.items.size())
        error(fmt::format("too {} items to unpack in set",
                          target.items.size() > rhs.array->size() ? "few" : "many"));
      for (size_t i = 0; i < target.items.size(); ++i) {
        if (target.items[i]->kind != ExprKind::identifier) error("set can only unpack into names");
        env.set(target.items[i]->text, (*rhs.array)[i]);
      }
    } else if (target.kind == ExprKind::member) {
      const Value object = eval(*target.a, env);
      if (object.type != Type::namespace_)
        error("set can only assign attributes of a namespace() object");
      if (target.flag || target.b->kind != ExprKind::identifier)
        error("set ns.attribute needs a plain attribute name");
      object.object->set(target.b->text, rhs);
    } else {
      error("set needs a name, names, or a namespace attribute on its left");
    }
  }

  void bind_loop_variable(const Expr& target, const Value& item, Environment& env) {
    if (target.kind == ExprKind::identifier) {
      env.set(target.text, item);
      return;
    }
    if (item.type != Type::array && item.type != Type::tuple)
      error(fmt::format("cannot unpack {} into loop variables", type_name(item.type)));
    if (item.array->size() != target.items.size())
      error(fmt::format("too {} items to unpack",
                        target.items.size() > item.array->size() ? "few" : "many"));
    for (size_t j = 0; j < target.items.size(); ++j) {
      if (target.items[j]->kind != ExprKind::identifier) error("loop variables must be names");
      env.set(target.items[j]->text, (*item.array)[j]);
    }
  }

  Value exec_for(const Stmt& s, Environment& env) {
    Environment scope(&env);
    const Expr* test = nullptr;
    Value iterable;
    if (s.expr->kind == ExprKind::select) {
      iterable = eval(*s.expr->a, scope);
      test = s.expr->b.get();
    } else {
      iterable = eval(*s.expr, scope);
    }
    if (iterable.is_object()) {
      Array keys;
      for (const auto& [k, v] : iterable.object->entries) keys.push_back(Value::str(k));
      iterable = Value::list(std::move(keys));
    }
    if (!iterable.is_array())
      error(fmt::format("for loop over {}: expected a list or a dict", type_name(iterable.type)));
    const Array source = *iterable.array;  // the body may not change what is iterated
    Array items;
    for (const auto& item : source) {
      if (test) {
        Environment loop_scope(&scope);
        bind_loop_variable(*s.target, item, loop_scope);
        if (!eval(*test, loop_scope).truthy()) continue;
      }
      items.push_back(item);
    }
    std::string out;
    bool iterated = false;
    const double n = static_cast<double>(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      const double d = static_cast<double>(i);
      Object loop;
      loop.entries = {
          {"index", Value::integer(d + 1)},
          {"index0", Value::integer(d)},
          {"revindex", Value::integer(n - d)},
          {"revindex0", Value::integer(n - d - 1)},
          {"first", Value::from_bool(i == 0)},
          {"last", Value::from_bool(i + 1 == items.size())},
          {"length", Value::integer(n)},
          {"previtem", i > 0 ? items[i - 1] : Value::undefined()},
          {"nextitem", i + 1 < items.size() ? items[i + 1] : Value::undefined()},
      };
      count_step();
      scope.set("loop", Value::dict(std::move(loop)));
      bind_loop_variable(*s.target, items[i], scope);
      try {
        append(out, exec_block(s.body, scope).string);
      } catch (const ContinueSignal&) {
        continue;
      } catch (const BreakSignal&) {
        break;
      }
      iterated = true;
    }
    if (!iterated) append(out, exec_block(s.alternate, scope).string);
    return Value::str(std::move(out));
  }

  // Names `kwargs` and `varargs` used in a macro body make it accept extra arguments.
  static bool uses_name(const Expr& e, const std::string& name) {
    if (e.kind == ExprKind::identifier && e.text == name) return true;
    for (const Expr* c : {e.a.get(), e.b.get(), e.c.get()})
      if (c && uses_name(*c, name)) return true;
    for (const auto& i : e.items)
      if (uses_name(*i, name)) return true;
    for (const auto& [k, v] : e.entries)
      if (uses_name(*k, name) || uses_name(*v, name)) return true;
    return false;
  }
  static bool uses_name(const std::vector<std::unique_ptr<Stmt>>& body, const std::string& name) {
    for (const auto& s : body) {
      for (const Expr* c : {s->expr.get(), s->target.get()})
        if (c && uses_name(*c, name)) return true;
      for (const auto& p : s->params)
        if (uses_name(*p, name)) return true;
      if (uses_name(s->body, name) || uses_name(s->alternate, name)) return true;
    }
    return false;
  }

  void bind_arguments(const std::string& display, const std::vector<std::unique_ptr<Expr>>& params,
                      bool takes_kwargs, bool takes_varargs, std::vector<Value> args,
                      Environment& scope) {
    Object kwargs;
    if (!args.empty() && args.back().type == Type::keyword_arguments) {
      kwargs = *args.back().object;
      args.pop_back();
    }
    std::vector<std::pair<std::string, const Expr*>> pending_defaults;
    for (size_t i = 0; i < params.size(); ++i) {
      const Expr& p = *params[i];
      const std::string& name = p.text;
      Value value;
      bool given = i < args.size();
      if (given) value = args[i];
      if (!given) {
        auto it = std::find_if(kwargs.entries.begin(), kwargs.entries.end(),
                               [&](const auto& e) { return e.first == name; });
        if (it != kwargs.entries.end()) {
          value = it->second;
          kwargs.entries.erase(it);
          given = true;
        }
      }
      if (!given && p.kind == ExprKind::keyword_argument)
        pending_defaults.emplace_back(name, p.a.get());
      scope.set(name, value);
    }
    if (takes_kwargs) {
      scope.set("kwargs", Value::dict(kwargs));
    } else if (!kwargs.entries.empty()) {
      error(fmt::format("macro {} takes no keyword argument '{}'", display,
                        kwargs.entries.front().first));
    }
    if (takes_varargs) {
      Array rest;
      for (size_t i = params.size(); i < args.size(); ++i) rest.push_back(args[i]);
      scope.set("varargs", Value::list(std::move(rest)));
    } else if (args.size() > params.size()) {
      error(fmt::format("macro {} takes not more than {} argument(s)", display, params.size()));
    }
    for (const auto& [name, def] : pending_defaults) scope.set(name, eval(*def, scope));
  }

  Value make_macro(const Stmt& s) {
    const bool kwargs = uses_name(s.body, "kwargs");
    const bool varargs = uses_name(s.body, "varargs");
    const Stmt* macro = &s;
    return Value::callable(
        [this, macro, kwargs, varargs](std::vector<Value>& args, Environment& caller) {
          Environment scope(&caller);
          bind_arguments("'" + macro->text + "'", macro->params, kwargs, varargs, args, scope);
          return exec_block(macro->body, scope);
        });
  }

  Value exec_call_block(const Stmt& s, Environment& env) {
    const bool kwargs = uses_name(s.body, "kwargs");
    const bool varargs = uses_name(s.body, "varargs");
    const Stmt* block = &s;
    Environment* defining = &env;
    const Value caller = Value::callable(
        [this, block, kwargs, varargs, defining](std::vector<Value>& args, Environment&) {
          Environment scope(defining);
          bind_arguments("None", block->params, kwargs, varargs, args, scope);
          return exec_block(block->body, scope);
        });
    auto [positional, keywords] = eval_arguments(s.expr->items, env);
    positional.push_back(Value::dict(std::move(keywords), Type::keyword_arguments));
    const Value fn = eval(*s.expr->a, env);
    if (fn.type != Type::function)
      error(fmt::format("call block: '{}' is not a macro", s.expr->a->text));
    Environment scope(&env);
    scope.set("caller", caller);
    return (*fn.function)(positional, scope);
  }

  // ---- expressions ----------------------------------------------------------------------

  Value eval(const Expr& e, Environment& env) {
    Guard guard(*this, e.line);
    switch (e.kind) {
      case ExprKind::integer_literal:
        return Value::integer(e.number);
      case ExprKind::float_literal:
        return Value::floating(e.number);
      case ExprKind::string_literal:
        return Value::str(e.text);
      case ExprKind::identifier:
        return env.lookup(e.text);
      case ExprKind::array_literal:
      case ExprKind::tuple_literal: {
        Array items;
        for (const auto& i : e.items) items.push_back(eval(*i, env));
        return Value::list(std::move(items),
                           e.kind == ExprKind::array_literal ? Type::array : Type::tuple);
      }
      case ExprKind::object_literal: {
        Object o;
        for (const auto& [k, v] : e.entries) {
          const Value key = eval(*k, env);
          if (key.type != Type::string)
            error(fmt::format("dict keys must be strings, got {}", type_name(key.type)));
          o.set(key.string, eval(*v, env));
        }
        return Value::dict(std::move(o));
      }
      case ExprKind::member:
        return eval_member(e, env);
      case ExprKind::call:
        return eval_call(e, env);
      case ExprKind::unary:
        return eval_unary(e, env);
      case ExprKind::binary:
        return eval_binary(e, env);
      case ExprKind::filter:
        return apply_filter(eval(*e.a, env), *e.b, env);
      case ExprKind::test:
        return Value::from_bool(run_test(e.text, eval(*e.a, env)) != e.flag);
      case ExprKind::select:
        return eval(*e.b, env).truthy() ? eval(*e.a, env) : Value::undefined();
      case ExprKind::ternary:
        return eval(*e.a, env).truthy() ? eval(*e.b, env) : eval(*e.c, env);
      case ExprKind::slice:
        error("a slice is only valid inside []");
      case ExprKind::keyword_argument:
      case ExprKind::spread:
      case ExprKind::keyword_spread:
        error("argument syntax outside a call");
    }
    return Value::undefined();
  }

  std::pair<std::vector<Value>, Object> eval_arguments(
      const std::vector<std::unique_ptr<Expr>>& args, Environment& env) {
    std::vector<Value> positional;
    Object keywords;
    for (const auto& a : args) {
      if (a->kind == ExprKind::spread) {
        const Value v = eval(*a->a, env);
        if (!v.is_array()) error(fmt::format("cannot unpack {} with '*'", type_name(v.type)));
        positional.insert(positional.end(), v.array->begin(), v.array->end());
      } else if (a->kind != ExprKind::keyword_argument && a->kind != ExprKind::keyword_spread) {
        positional.push_back(eval(*a, env));
      }
    }
    const auto add = [&](const std::string& key, Value v) {
      if (keywords.find(key))
        error(fmt::format("got multiple values for keyword argument '{}'", key));
      keywords.entries.emplace_back(key, std::move(v));
    };
    for (const auto& a : args) {
      if (a->kind == ExprKind::keyword_argument) {
        add(a->text, eval(*a->a, env));
      } else if (a->kind == ExprKind::keyword_spread) {
        const Value v = eval(*a->a, env);
        if (!v.is_object())
          error(fmt::format("argument after ** must be a dict, not {}", type_name(v.type)));
        for (const auto& [k, val] : v.object->entries) add(k, val);
      }
    }
    return {std::move(positional), std::move(keywords)};
  }

  static std::string describe_callee(const Expr& callee) {
    if (callee.kind == ExprKind::identifier) return "'" + callee.text + "'";
    if (callee.kind == ExprKind::member && !callee.flag && callee.b->kind == ExprKind::identifier)
      return "method '" + callee.b->text + "'";
    return "the expression";
  }

  Value eval_call(const Expr& e, Environment& env) {
    auto [args, keywords] = eval_arguments(e.items, env);
    if (!keywords.entries.empty())
      args.push_back(Value::dict(std::move(keywords), Type::keyword_arguments));
    const Value fn = eval(*e.a, env);
    if (fn.type != Type::function) {
      if (e.a->kind == ExprKind::member && fn.type == Type::undefined)
        error(
            fmt::format("{} is not supported on this value (this Jinja subset has no such "
                        "method)",
                        describe_callee(*e.a)));
      error(fmt::format("cannot call {}: it is {}", describe_callee(*e.a), type_name(fn.type)));
    }
    return (*fn.function)(args, env);
  }

  Value eval_member(const Expr& e, Environment& env) {
    const Value object = eval(*e.a, env);
    Value property;
    if (e.flag) {
      if (e.b->kind == ExprKind::slice) return eval_slice(object, *e.b, env);
      property = eval(*e.b, env);
    } else if (e.b->kind == ExprKind::integer_literal) {
      property = Value::integer(e.b->number);
    } else {
      property = Value::str(e.b->text);
    }
    if (object.is_object() || object.type == Type::namespace_) {
      if (property.type != Type::string)
        error(fmt::format("dict keys must be strings, got {}", type_name(property.type)));
      if (const Value* v = object.object->find(property.string)) return *v;
      if (object.type != Type::namespace_) return dict_method(object, property.string);
      return Value::undefined();
    }
    if (object.is_array() || object.type == Type::string) {
      if (property.is_number()) {
        if (object.type == Type::string) return string_at(object.string, property.number);
        const long long n = static_cast<long long>(object.array->size());
        long long i = static_cast<long long>(std::trunc(property.number));
        if (i < 0) i += n;
        if (i < 0 || i >= n) return Value::undefined();
        return (*object.array)[static_cast<size_t>(i)];
      }
      if (property.type == Type::string) {
        if (object.type == Type::string) return string_method(object.string, property.string);
        if (property.string == "length")
          return Value::integer(static_cast<double>(object.array->size()));
        return Value::undefined();
      }
      error(fmt::format("cannot index with {}", type_name(property.type)));
    }
    if (property.type != Type::string)
      error(
          fmt::format("cannot index {} with {}", type_name(object.type), type_name(property.type)));
    return Value::undefined();
  }

  // String.prototype.at on UTF-16 code units; a lone surrogate half cannot be UTF-8, so an
  // index inside a non-BMP character yields the whole character.
  static Value string_at(const std::string& s, double index) {
    const std::u32string cps = utf8_to_utf32(s);
    std::vector<size_t> unit_to_cp;
    for (size_t i = 0; i < cps.size(); ++i) {
      unit_to_cp.push_back(i);
      if (cps[i] >= 0x10000) unit_to_cp.push_back(i);
    }
    const long long n = static_cast<long long>(unit_to_cp.size());
    long long i = static_cast<long long>(std::trunc(index));
    if (i < 0) i += n;
    if (i < 0 || i >= n) return Value::undefined();
    std::string out;
    append_utf8(out, cps[unit_to_cp[static_cast<size_t>(i)]]);
    return Value::str(out);
  }

  Value eval_slice(const Value& object, const Expr& slice, Environment& env) {
    if (!object.is_array() && object.type != Type::string)
      error(fmt::format("cannot slice {}", type_name(object.type)));
    const Value start = slice.a ? eval(*slice.a, env) : Value::undefined();
    const Value stop = slice.b ? eval(*slice.b, env) : Value::undefined();
    const Value step = slice.c ? eval(*slice.c, env) : Value::undefined();
    for (const Value* v : {&start, &stop, &step})
      if (v->type != Type::integer && v->type != Type::undefined)
        error("slice bounds must be integers");
    if (step.type == Type::integer && step.number == 0) error("slice step cannot be zero");
    if (object.is_array()) {
      Array out;
      for (size_t i : slice_indices(object.array->size(), start, stop, step))
        out.push_back((*object.array)[i]);
      return Value::list(std::move(out));
    }
    const std::u32string cps = utf8_to_utf32(object.string);
    std::u32string out;
    for (size_t i : slice_indices(cps.size(), start, stop, step)) out += cps[i];
    return Value::str(utf32_to_utf8(out));
  }

  Value eval_unary(const Expr& e, Environment& env) {
    const Value v = eval(*e.a, env);
    if (e.text == "not") return Value::from_bool(!v.truthy());
    const double sign = e.text == "-" ? -1 : 1;
    if (v.is_number() || v.type == Type::boolean) {
      const double x = v.type == Type::boolean ? (v.boolean ? 1 : 0) : v.number;
      return v.type == Type::floating ? Value::floating(sign * x) : Value::integer(sign * x);
    }
    error(fmt::format("unary '{}' on {}", e.text, type_name(v.type)));
  }

  static bool numeric_like(const Value& v) { return v.is_number() || v.type == Type::boolean; }
  static double numeric_value(const Value& v) {
    return v.type == Type::boolean ? (v.boolean ? 1 : 0) : v.number;
  }

  Value eval_binary(const Expr& e, Environment& env) {
    const std::string& op = e.text;
    const Value left = eval(*e.a, env);
    if (op == "and") return left.truthy() ? eval(*e.b, env) : left;
    if (op == "or") return left.truthy() ? left : eval(*e.b, env);
    const Value right = eval(*e.b, env);
    if (op == "==") return Value::from_bool(loose_equal(left, right));
    if (op == "!=") return Value::from_bool(!loose_equal(left, right));
    if (left.type == Type::undefined || right.type == Type::undefined) {
      if (right.type == Type::undefined && (op == "in" || op == "not in"))
        return Value::from_bool(op == "not in");
      error(fmt::format("cannot apply '{}' to an undefined value", op));
    }
    if (left.type == Type::null || right.type == Type::null)
      error(fmt::format("cannot apply '{}' to none", op));
    if (op == "~") {
      check_size(raw_string(left).size() + raw_string(right).size());
      return Value::str(raw_string(left) + raw_string(right));
    }
    if (op == "**" && numeric_like(left) && numeric_like(right)) {
      const double a = numeric_value(left), b = numeric_value(right);
      if (a == 0 && b < 0) error("0.0 cannot be raised to a negative power");
      const double r = std::pow(a, b);
      if (!std::isfinite(r)) error("exponentiation result is not a finite number");
      const bool is_float = left.type == Type::floating || right.type == Type::floating || b < 0;
      return is_float ? Value::floating(r) : Value::integer(r);
    }
    if (left.is_number() && right.is_number()) {
      const double a = left.number, b = right.number;
      const bool is_float = left.type == Type::floating || right.type == Type::floating;
      const auto num = [&](double r) { return is_float ? Value::floating(r) : Value::integer(r); };
      if (op == "+") return num(a + b);
      if (op == "-") return num(a - b);
      if (op == "*") return num(a * b);
      if (op == "/") return Value::floating(a / b);
      if (op == "//") return num(std::floor(a / b));
      if (op == "%") return num(std::fmod(a, b));
      if (op == "<") return Value::from_bool(a < b);
      if (op == ">") return Value::from_bool(a > b);
      if (op == ">=") return Value::from_bool(a >= b);
      if (op == "<=") return Value::from_bool(a <= b);
    } else if (left.is_array() && right.is_array()) {
      if (op == "+") {
        count_step();
        if (left.array->size() + right.array->size() > 10'000'000)
          error("list of more than 10000000 items");
        Array out = *left.array;
        out.insert(out.end(), right.array->begin(), right.array->end());
        return Value::list(std::move(out));
      }
    } else if (right.is_array()) {
      if (op == "in" || op == "not in") {
        const bool member = std::any_of(right.array->begin(), right.array->end(),
                                        [&](const Value& x) { return strict_equal(x, left); });
        return Value::from_bool(member == (op == "in"));
      }
    }
    if ((left.type == Type::string || right.type == Type::string) && op == "+") {
      for (const Value* v : {&left, &right})
        if (v->type != Type::string && !numeric_like(*v))
          error(fmt::format("cannot add {} and {}", type_name(left.type), type_name(right.type)));
      check_size(raw_string(left).size() + raw_string(right).size());
      return Value::str(raw_string(left) + raw_string(right));
    }
    if (left.type == Type::string && right.type == Type::string && (op == "in" || op == "not in"))
      return Value::from_bool((right.string.find(left.string) != std::string::npos) ==
                              (op == "in"));
    if (left.type == Type::string && right.is_object() && (op == "in" || op == "not in"))
      return Value::from_bool((right.object->find(left.string) != nullptr) == (op == "in"));
    error(fmt::format("operator '{}' is not defined between {} and {}", op, type_name(left.type),
                      type_name(right.type)));
  }

  // ---- tests ----------------------------------------------------------------------------

  bool run_test(const std::string& name, const Value& v) const {
    if (name == "boolean") return v.type == Type::boolean;
    if (name == "callable") return v.type == Type::function;
    if (name == "odd" || name == "even") {
      if (v.type != Type::integer)
        error(fmt::format("cannot test {} for {}", type_name(v.type), name));
      const bool odd = std::fmod(v.number, 2) != 0;
      return name == "odd" ? odd : !odd;
    }
    if (name == "false") return v.type == Type::boolean && !v.boolean;
    if (name == "true") return v.type == Type::boolean && v.boolean;
    if (name == "none") return v.type == Type::null;
    if (name == "string") return v.type == Type::string;
    if (name == "number") return v.is_number();
    if (name == "integer") return v.type == Type::integer;
    if (name == "iterable") return v.is_array() || v.type == Type::string;
    if (name == "mapping") return v.is_object();
    if (name == "sequence") return v.is_array() || v.is_object() || v.type == Type::string;
    if (name == "lower") return v.type == Type::string && v.string == ascii_lower(v.string);
    if (name == "upper") return v.type == Type::string && v.string == ascii_upper(v.string);
    if (name == "defined") return v.type != Type::undefined;
    if (name == "undefined") return v.type == Type::undefined;
    error(fmt::format("unsupported test 'is {}'", name));
  }

  // ---- methods --------------------------------------------------------------------------

  Value string_method(const std::string& s, const std::string& name) {
    if (name == "length") return Value::integer(static_cast<double>(utf16_length(s)));
    const auto method = [](auto f) { return Value::callable(f); };
    if (name == "upper")
      return method([s](std::vector<Value>&, Environment&) { return Value::str(ascii_upper(s)); });
    if (name == "lower")
      return method([s](std::vector<Value>&, Environment&) { return Value::str(ascii_lower(s)); });
    if (name == "strip" || name == "lstrip" || name == "rstrip")
      return method([s, name](std::vector<Value>&, Environment&) {
        return Value::str(js_trim(s, name != "rstrip", name != "lstrip"));
      });
    if (name == "title")
      return method([s](std::vector<Value>&, Environment&) {
        std::string out = s;
        for (size_t i = 0; i < out.size(); ++i)
          if (is_word_char(out[i]) && (i == 0 || !is_word_char(out[i - 1])) && out[i] >= 'a' &&
              out[i] <= 'z')
            out[i] = static_cast<char>(out[i] - 'a' + 'A');
        return Value::str(out);
      });
    if (name == "capitalize")
      return method([s](std::vector<Value>&, Environment&) {
        std::string out = s;
        if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 32);
        return Value::str(out);
      });
    if (name == "startswith" || name == "endswith")
      return method([this, s, name](std::vector<Value>& args, Environment&) {
        if (args.empty()) error(fmt::format("{}() requires an argument", name));
        const auto matches = [&](const std::string& p) {
          if (p.size() > s.size()) return false;
          return name == "startswith" ? s.compare(0, p.size(), p) == 0
                                      : s.compare(s.size() - p.size(), p.size(), p) == 0;
        };
        if (args[0].type == Type::string) return Value::from_bool(matches(args[0].string));
        if (args[0].is_array()) {
          for (const auto& item : *args[0].array) {
            if (item.type != Type::string)
              error(fmt::format("{}() tuple elements must be strings", name));
            if (matches(item.string)) return Value::from_bool(true);
          }
          return Value::from_bool(false);
        }
        error(fmt::format("{}() argument must be a string or a tuple of strings", name));
      });
    if (name == "split")
      return method([this, s](std::vector<Value>& args, Environment&) {
        const Value sep = args.size() > 0 ? args[0] : Value::null();
        if (sep.type != Type::string && sep.type != Type::null)
          error("split(): the separator must be a string or none");
        const Value maxsplit = args.size() > 1 ? args[1] : Value::integer(-1);
        if (maxsplit.type != Type::integer) error("split(): maxsplit must be an integer");
        std::vector<std::string> parts;
        if (sep.type == Type::null) {
          parts = split_whitespace(s, maxsplit.number);
        } else {
          if (sep.string.empty()) error("split(): empty separator");
          parts = split_on(s, sep.string);
          if (maxsplit.number != -1 && parts.size() > maxsplit.number) {
            const size_t keep = static_cast<size_t>(std::max(maxsplit.number, 0.0));
            std::vector<std::string> rest(parts.begin() + keep, parts.end());
            parts.resize(keep);
            parts.push_back(join(rest, sep.string));
          }
        }
        Array out;
        for (auto& p : parts) out.push_back(Value::str(std::move(p)));
        return Value::list(std::move(out));
      });
    if (name == "replace")
      return method([this, s](std::vector<Value>& args, Environment&) { return replace(s, args); });
    return Value::undefined();
  }

  Value replace(const std::string& s, std::vector<Value>& args) {
    if (args.size() < 2) error("replace() requires two arguments");
    if (args[0].type != Type::string || args[1].type != Type::string)
      error("replace() arguments must be strings");
    Value count = Value::null();
    if (args.size() > 2) {
      if (args[2].type == Type::keyword_arguments) {
        const Value* c = args[2].object->find("count");
        count = c ? *c : Value::null();
      } else {
        count = args[2];
      }
    }
    if (count.type != Type::integer && count.type != Type::null)
      error("replace() count must be an integer or none");
    if (count.type == Type::integer && count.number == 0) return Value::str(s);
    double remaining = count.type == Type::null || count.number < 0 ? INFINITY : count.number;
    const std::string& from = args[0].string;
    const std::string& to = args[1].string;
    std::string out;
    if (from.empty()) {
      // An empty pattern matches before every character and at the end.
      size_t i = 0, len = 1;
      while (i <= s.size()) {
        if (remaining > 0) {
          append(out, to);
          --remaining;
        }
        if (i == s.size()) break;
        decode_at(s, i, &len);
        out.append(s, i, len);
        i += len;
      }
      return Value::str(out);
    }
    size_t start = 0;
    while (remaining > 0) {
      const size_t p = s.find(from, start);
      if (p == std::string::npos) break;
      out.append(s, start, p - start);
      append(out, to);
      start = p + from.size();
      --remaining;
    }
    out.append(s, start, std::string::npos);
    return Value::str(out);
  }

  Value dict_method(const Value& dict, const std::string& name) {
    const auto obj = dict.object;
    if (name == "get")
      return Value::callable([this, obj](std::vector<Value>& args, Environment&) {
        if (args.empty() || args[0].type != Type::string) error("get(): the key must be a string");
        if (const Value* v = obj->find(args[0].string)) return *v;
        return args.size() > 1 ? args[1] : Value::null();
      });
    if (name == "items")
      return Value::callable([obj](std::vector<Value>&, Environment&) { return items(*obj); });
    if (name == "keys")
      return Value::callable([obj](std::vector<Value>&, Environment&) {
        Array out;
        for (const auto& [k, v] : obj->entries) out.push_back(Value::str(k));
        return Value::list(std::move(out));
      });
    if (name == "values")
      return Value::callable([obj](std::vector<Value>&, Environment&) {
        Array out;
        for (const auto& [k, v] : obj->entries) out.push_back(v);
        return Value::list(std::move(out));
      });
    if (name == "dictsort")
      return Value::callable(
          [this, obj](std::vector<Value>& args, Environment&) { return dictsort(*obj, args); });
    return Value::undefined();
  }

  static Value items(const Object& obj) {
    Array out;
    for (const auto& [k, v] : obj.entries) out.push_back(Value::list({Value::str(k), v}));
    return Value::list(std::move(out));
  }

  // Positional arguments and name=value arguments, as the filters take them.
  struct Args {
    std::vector<Value> positional;
    Object keywords;
    Value get(size_t i, const char* name, Value fallback) const {
      if (i < positional.size()) return positional[i];
      if (const Value* v = keywords.find(name)) return *v;
      return fallback;
    }
  };
  static Args split_args(const std::vector<Value>& args) {
    Args out;
    for (const auto& a : args) {
      if (a.type == Type::keyword_arguments)
        out.keywords = *a.object;
      else
        out.positional.push_back(a);
    }
    return out;
  }

  int compare(const Value& a, const Value& b, bool case_sensitive) const {
    const bool a_nullish = a.type == Type::null || a.type == Type::undefined;
    const bool b_nullish = b.type == Type::null || b.type == Type::undefined;
    if (a_nullish || b_nullish) {
      if (a.type == b.type) return 0;
      error(fmt::format("cannot compare {} with {}", type_name(a.type), type_name(b.type)));
    }
    if (numeric_like(a) && numeric_like(b)) {
      const double x = numeric_value(a), y = numeric_value(b);
      return x < y ? -1 : x > y ? 1 : 0;
    }
    if (a.type != b.type)
      error(fmt::format("cannot compare different types: {} and {}", type_name(a.type),
                        type_name(b.type)));
    if (a.type != Type::string) error(fmt::format("cannot compare {}", type_name(a.type)));
    const std::string x = case_sensitive ? a.string : ascii_lower(a.string);
    const std::string y = case_sensitive ? b.string : ascii_lower(b.string);
    return x < y ? -1 : x > y ? 1 : 0;
  }

  Value dictsort(const Object& obj, const std::vector<Value>& raw) {
    const Args args = split_args(raw);
    const Value case_sensitive = args.get(0, "case_sensitive", Value::from_bool(false));
    const Value by = args.get(1, "by", Value::str("key"));
    const Value reverse = args.get(2, "reverse", Value::from_bool(false));
    if (case_sensitive.type != Type::boolean) error("dictsort: case_sensitive must be a boolean");
    if (by.type != Type::string || (by.string != "key" && by.string != "value"))
      error("dictsort: by must be 'key' or 'value'");
    if (reverse.type != Type::boolean) error("dictsort: reverse must be a boolean");
    Array pairs = *items(obj).array;
    const size_t index = by.string == "key" ? 0 : 1;
    std::stable_sort(pairs.begin(), pairs.end(), [&](const Value& a, const Value& b) {
      const int r = compare((*a.array)[index], (*b.array)[index], case_sensitive.boolean);
      return (reverse.boolean ? -r : r) < 0;
    });
    return Value::list(std::move(pairs));
  }

  // ---- filters --------------------------------------------------------------------------

  [[noreturn]] void unknown_filter(const std::string& name, const Value& operand) const {
    error(fmt::format("unsupported filter '{}' on {}", name, type_name(operand.type)));
  }

  static Value attribute_path(const Value& item, const std::string& path) {
    Value v = item;
    for (const auto& part : split_on(path, ".")) {
      if (v.is_object() || v.type == Type::namespace_) {
        const Value* f = v.object->find(part);
        v = f ? *f : Value::undefined();
      } else if (v.is_array()) {
        char* end = nullptr;
        const long i = std::strtol(part.c_str(), &end, 10);
        if (end == part.c_str() || i < 0 || static_cast<size_t>(i) >= v.array->size())
          return Value::undefined();
        v = (*v.array)[static_cast<size_t>(i)];
      } else {
        return Value::undefined();
      }
    }
    return v;
  }

  Value apply_filter(const Value& operand, const Expr& filter, Environment& env) {
    if (filter.kind == ExprKind::identifier) return simple_filter(operand, filter.text);
    if (filter.kind != ExprKind::call || filter.a->kind != ExprKind::identifier)
      error("a filter must be a name or a call of one");
    const std::string& name = filter.a->text;
    auto [positional, keywords] = eval_arguments(filter.items, env);
    Args args{positional, keywords};
    if (name == "tojson") return tojson(operand, args);
    if (name == "join") {
      std::vector<std::string> parts;
      if (operand.type == Type::string) {
        for (char32_t c : utf8_to_utf32(operand.string)) {
          std::string ch;
          append_utf8(ch, c);
          parts.push_back(ch);
        }
      } else if (operand.is_array()) {
        for (const auto& x : *operand.array) parts.push_back(raw_string(x));
      } else {
        unknown_filter(name, operand);
      }
      const Value sep = args.get(0, "separator", Value::str(""));
      if (sep.type != Type::string) error("join: the separator must be a string");
      size_t total = 0;
      for (const auto& p : parts) total += p.size() + sep.string.size();
      check_size(total);
      return Value::str(join(parts, sep.string));
    }
    if (name == "int" || name == "float") {
      const Value fallback =
          args.get(0, "default", name == "int" ? Value::integer(0) : Value::floating(0));
      if (operand.type == Type::string) {
        const auto parsed = parse_number(operand.string, name == "int");
        if (std::isnan(parsed)) return fallback;
        return name == "int" ? Value::integer(parsed) : Value::floating(parsed);
      }
      if (operand.is_number()) return operand;
      if (operand.type == Type::boolean)
        return name == "int" ? Value::integer(operand.boolean) : Value::floating(operand.boolean);
      unknown_filter(name, operand);
    }
    if (name == "default") {
      const Value fallback = positional.size() > 0 ? positional[0] : Value::str("");
      const Value boolean = args.get(1, "boolean", Value::from_bool(false));
      if (boolean.type != Type::boolean) error("default: the boolean flag must be a boolean");
      if (operand.type == Type::undefined || (boolean.boolean && !operand.truthy()))
        return fallback;
      return operand;
    }
    if (operand.is_array()) {
      if (name == "sort") {
        const Value reverse = args.get(0, "reverse", Value::from_bool(false));
        const Value case_sensitive = args.get(1, "case_sensitive", Value::from_bool(false));
        const Value attribute = args.get(2, "attribute", Value::null());
        if (reverse.type != Type::boolean || case_sensitive.type != Type::boolean)
          error("sort: reverse and case_sensitive must be booleans");
        if (attribute.type != Type::string && attribute.type != Type::integer &&
            attribute.type != Type::null)
          error("sort: attribute must be a string, an integer or none");
        const auto key = [&](const Value& item) {
          if (attribute.type == Type::null) return item;
          return attribute_path(item, attribute.type == Type::integer ? js_number(attribute.number)
                                                                      : attribute.string);
        };
        Array out = *operand.array;
        std::stable_sort(out.begin(), out.end(), [&](const Value& a, const Value& b) {
          const int r = compare(key(a), key(b), case_sensitive.boolean);
          return (reverse.boolean ? -r : r) < 0;
        });
        return Value::list(std::move(out));
      }
      if (name == "selectattr" || name == "rejectattr") {
        const bool select = name == "selectattr";
        for (const auto& item : *operand.array)
          if (!item.is_object() && item.type != Type::namespace_)
            error(fmt::format("{} can only be applied to a list of dicts", name));
        for (const auto& a : filter.items)
          if (a->kind != ExprKind::string_literal)
            error(fmt::format("the arguments of {} must be string literals", name));
        if (positional.empty()) error(fmt::format("{} needs an attribute name", name));
        const std::string attr = positional[0].string;
        const std::string test = positional.size() > 1 ? positional[1].string : "";
        const Value test_value = positional.size() > 2 ? positional[2] : Value::undefined();
        Array out;
        for (const auto& item : *operand.array) {
          const Value* a = item.object->find(attr);
          bool result = false;
          if (a) {
            if (test.empty())
              result = a->truthy();
            else if (test == "equalto" || test == "eq")
              result = strict_equal(*a, test_value);
            else
              result = run_test(test, *a);
          }
          if (result == select) out.push_back(item);
        }
        return Value::list(std::move(out));
      }
      if (name == "map") {
        const Value* attr = keywords.find("attribute");
        if (!attr) error("map: only map(attribute=...) is supported");
        if (attr->type != Type::string) error("map: attribute must be a string");
        const Value* fallback = keywords.find("default");
        Array out;
        for (const auto& item : *operand.array) {
          if (!item.is_object() && item.type != Type::namespace_)
            error("map: the items must be dicts");
          Value v = attribute_path(item, attr->string);
          if (v.type == Type::undefined && fallback) v = *fallback;
          out.push_back(v);
        }
        return Value::list(std::move(out));
      }
      unknown_filter(name, operand);
    }
    if (operand.type == Type::string) {
      if (name == "indent") {
        const Value width = args.get(0, "width", Value::integer(4));
        if (width.type != Type::integer) error("indent: width must be an integer");
        if (width.number > 4096) error("indent: width above 4096");
        const bool first = args.get(1, "first", Value::from_bool(false)).truthy();
        const bool blank = args.get(2, "blank", Value::from_bool(false)).truthy();
        return Value::str(
            indent(operand.string, static_cast<size_t>(std::max(width.number, 0.0)), first, blank));
      }
      if (name == "replace") {
        std::vector<Value> all = positional;
        all.push_back(Value::dict(keywords, Type::keyword_arguments));
        return replace(operand.string, all);
      }
      unknown_filter(name, operand);
    }
    if (operand.is_object()) {
      const Value method = dict_method(operand, name);
      if (method.type == Type::function) {
        std::vector<Value> all = positional;
        if (!keywords.entries.empty())
          all.push_back(Value::dict(keywords, Type::keyword_arguments));
        return (*method.function)(all, env);
      }
    }
    unknown_filter(name, operand);
  }

  // parseInt / parseFloat: the longest numeric prefix after leading whitespace; NaN if none.
  static double parse_number(const std::string& text, bool integer) {
    const std::string s = js_trim(text, true, false);
    size_t i = 0;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    const size_t digits_start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    size_t end = i;
    if (!integer) {
      if (i < s.size() && s[i] == '.') {
        ++i;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
        if (i > digits_start + 1) end = i;
      }
      if (end > digits_start && end < s.size() && (s[end] == 'e' || s[end] == 'E')) {
        size_t j = end + 1;
        if (j < s.size() && (s[j] == '+' || s[j] == '-')) ++j;
        const size_t exp_digits = j;
        while (j < s.size() && s[j] >= '0' && s[j] <= '9') ++j;
        if (j > exp_digits) end = j;
      }
      if (s.compare(digits_start, 8, "Infinity") == 0) return s[0] == '-' ? -INFINITY : INFINITY;
    }
    if (end == digits_start) return NAN;
    const double v = std::strtod(s.substr(0, end).c_str(), nullptr);
    return integer ? std::trunc(v) : v;
  }

  static std::string indent(const std::string& s, size_t width, bool first, bool blank) {
    const std::string pad(width, ' ');
    const auto lines = split_on(s, "\n");
    std::vector<std::string> out;
    for (size_t i = 0; i < lines.size(); ++i)
      out.push_back((!first && i == 0) || (!blank && lines[i].empty()) ? lines[i] : pad + lines[i]);
    return join(out, "\n");
  }

  Value tojson(const Value& operand, const Args& args) {
    JsonFormat f;
    const Value indent_v =
        args.keywords.find("indent") ? *args.keywords.find("indent") : Value::null();
    if (indent_v.type != Type::integer && indent_v.type != Type::null)
      error("tojson: indent must be an integer");
    f.indent =
        indent_v.type == Type::integer ? static_cast<int>(std::min(indent_v.number, 64.0)) : 0;
    const Value* ascii = args.keywords.find("ensure_ascii");
    if (ascii && ascii->type != Type::boolean) error("tojson: ensure_ascii must be a boolean");
    f.ensure_ascii = ascii && ascii->boolean;
    const Value* sort = args.keywords.find("sort_keys");
    if (sort && sort->type != Type::boolean) error("tojson: sort_keys must be a boolean");
    f.sort_keys = sort && sort->boolean;
    if (const Value* sep = args.keywords.find("separators"); sep && sep->type != Type::null) {
      if (!sep->is_array() || sep->array->size() != 2 || (*sep->array)[0].type != Type::string ||
          (*sep->array)[1].type != Type::string)
        error("tojson: separators must be a tuple of two strings");
      f.item_separator = (*sep->array)[0].string;
      f.key_separator = (*sep->array)[1].string;
      if (f.item_separator.empty() || f.key_separator.empty())
        error("tojson: empty separators are not supported");
    }
    return Value::str(to_json(operand, f));
  }

  Value simple_filter(const Value& operand, const std::string& name) {
    if (name == "safe") return operand;
    if (name == "tojson") return Value::str(to_json(operand, {}));
    if (operand.is_array()) {
      const Array& a = *operand.array;
      if (name == "list") return operand;
      if (name == "first") return a.empty() ? Value::undefined() : a.front();
      if (name == "last") return a.empty() ? Value::undefined() : a.back();
      if (name == "length") return Value::integer(static_cast<double>(a.size()));
      if (name == "reverse") return Value::list(Array(a.rbegin(), a.rend()));
      if (name == "sort") {
        Array out = a;
        std::stable_sort(out.begin(), out.end(),
                         [&](const Value& x, const Value& y) { return compare(x, y, false) < 0; });
        return Value::list(std::move(out));
      }
      if (name == "join") {
        std::vector<std::string> parts;
        for (const auto& x : a) parts.push_back(raw_string(x));
        return Value::str(join(parts, ""));
      }
      if (name == "string") return Value::str(to_json(operand, {}, 0, false));
      if (name == "unique") {
        Array out;
        for (const auto& x : a)
          if (std::none_of(out.begin(), out.end(),
                           [&](const Value& y) { return strict_equal(x, y); }))
            out.push_back(x);
        return Value::list(std::move(out));
      }
    } else if (operand.type == Type::string) {
      const std::string& s = operand.string;
      if (name == "length" || name == "upper" || name == "lower" || name == "title" ||
          name == "capitalize") {
        const Value m = string_method(s, name);
        if (m.type == Type::integer) return m;
        std::vector<Value> none;
        Environment scratch;
        return (*m.function)(none, scratch);
      }
      if (name == "trim") return Value::str(js_trim(s, true, true));
      if (name == "indent") return Value::str(indent(s, 4, false, false));
      if (name == "join" || name == "string") return operand;
      if (name == "int") {
        const double v = parse_number(s, true);
        return Value::integer(std::isnan(v) ? 0 : v);
      }
      if (name == "float") {
        const double v = parse_number(s, false);
        return Value::floating(std::isnan(v) ? 0 : v);
      }
    } else if (operand.is_number()) {
      if (name == "abs")
        return operand.type == Type::integer ? Value::integer(std::fabs(operand.number))
                                             : Value::floating(std::fabs(operand.number));
      if (name == "int") return Value::integer(std::floor(operand.number));
      if (name == "float") return Value::floating(operand.number);
      if (name == "string") return Value::str(to_output(operand));
    } else if (operand.is_object()) {
      if (name == "items") return items(*operand.object);
      if (name == "length")
        return Value::integer(static_cast<double>(operand.object->entries.size()));
      const Value m = dict_method(operand, name);
      if (m.type == Type::function) {
        std::vector<Value> none;
        Environment scratch;
        return (*m.function)(none, scratch);
      }
    } else if (operand.type == Type::boolean) {
      if (name == "bool") return operand;
      if (name == "int") return Value::integer(operand.boolean ? 1 : 0);
      if (name == "float") return Value::floating(operand.boolean ? 1 : 0);
      if (name == "string") return Value::str(operand.boolean ? "true" : "false");
    }
    unknown_filter(name, operand);
  }

  // ---- globals --------------------------------------------------------------------------

  Value range(const std::vector<Value>& args) {
    for (const auto& a : args)
      if (!a.is_number()) error("range() arguments must be integers");
    if (args.empty() || args.size() > 3) error("range() takes 1 to 3 arguments");
    double start = 0, stop = 0, step = 1;
    if (args.size() == 1) {
      stop = args[0].number;
    } else {
      start = args[0].number;
      stop = args[1].number;
      if (args.size() == 3) step = args[2].number;
    }
    if (step == 0) error("range() step must not be zero");
    const double count = std::ceil((stop - start) / step);
    if (count > 10'000'000) error("range() of more than 10000000 items");
    Array out;
    if (step > 0)
      for (double i = start; i < stop; i += step) out.push_back(Value::integer(i));
    else
      for (double i = start; i > stop; i += step) out.push_back(Value::integer(i));
    return Value::list(std::move(out));
  }

  static std::string strftime_now(const std::string& format) {
    static const char* const kMonths[] = {"January",   "February", "March",    "April",
                                          "May",       "June",     "July",     "August",
                                          "September", "October",  "November", "December"};
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    const auto pad2 = [](int n) { return fmt::format("{:02d}", n); };
    std::string out;
    for (size_t i = 0; i < format.size(); ++i) {
      if (format[i] != '%' || i + 1 >= format.size()) {
        out += format[i];
        continue;
      }
      const char c = format[i + 1];
      switch (c) {
        case 'Y':
          out += std::to_string(tm.tm_year + 1900);
          break;
        case 'm':
          out += pad2(tm.tm_mon + 1);
          break;
        case 'd':
          out += pad2(tm.tm_mday);
          break;
        case 'b':
          out += std::string(kMonths[tm.tm_mon]).substr(0, 3);
          break;
        case 'B':
          out += kMonths[tm.tm_mon];
          break;
        case 'H':
          out += pad2(tm.tm_hour);
          break;
        case 'M':
          out += pad2(tm.tm_min);
          break;
        case '%':
          out += '%';
          break;
        default:
          out += format.substr(i, 2);
      }
      ++i;
    }
    return out;
  }

  Value make_namespace(std::vector<Value>& args) {
    Object entries;
    Object keywords;
    if (!args.empty() && args.back().type == Type::keyword_arguments) {
      keywords = *args.back().object;
      args.pop_back();
    }
    if (args.size() > 1) error("namespace() takes at most one positional argument");
    if (args.size() == 1) {
      const Value& source = args[0];
      if (source.is_object()) {
        entries = *source.object;
      } else if (source.is_array()) {
        for (const auto& pair : *source.array) {
          if (!pair.is_array() || pair.array->size() != 2 || (*pair.array)[0].type != Type::string)
            error("namespace() expects a dict or a list of [key, value] pairs");
          entries.set((*pair.array)[0].string, (*pair.array)[1]);
        }
      } else {
        error(fmt::format("namespace() cannot take {}", type_name(source.type)));
      }
    }
    for (const auto& [k, v] : keywords.entries) entries.set(k, v);
    return Value::dict(std::move(entries), Type::namespace_);
  }

  const std::string& origin_;
  int line_ = 1;
  int depth_ = 0;
  long long steps_ = 0;
};

}  // namespace

std::string render_program(const Program& program, const nlohmann::ordered_json& context,
                           const std::string& origin) {
  Evaluator evaluator(origin);
  Environment globals;
  evaluator.install_globals(globals);
  if (!context.is_object()) throw TemplateError(origin + ": the render context must be an object");
  for (const auto& [key, value] : context.items()) globals.set(key, from_json(value));
  return evaluator.run(program, globals);
}

}  // namespace ming::text::jinja
