// Runtime values of the Jinja interpreter and the JavaScript string and number semantics that
// @huggingface/jinja inherits: UTF-16 lengths and indices, JavaScript's whitespace set for
// trim(), Number-to-string formatting, JSON.stringify escaping.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace ming::text::jinja {

enum class Type {
  undefined,
  null,
  boolean,
  integer,
  floating,
  string,
  array,
  tuple,
  object,
  keyword_arguments,  // the trailing argument that carries name=value arguments of a call
  namespace_,
  function,
};

class Environment;
struct Value;
using Array = std::vector<Value>;

// A dict: insertion-ordered, as JavaScript's Map.
struct Object {
  std::vector<std::pair<std::string, Value>> entries;
  const Value* find(const std::string& key) const;
  void set(const std::string& key, Value value);
};

using Function = std::function<Value(std::vector<Value>& args, Environment& caller)>;

struct Value {
  Type type = Type::undefined;
  bool boolean = false;
  double number = 0;  // integer and floating (JavaScript numbers)
  std::string string;
  std::shared_ptr<Array> array;    // array, tuple
  std::shared_ptr<Object> object;  // object, keyword_arguments, namespace_
  std::shared_ptr<Function> function;

  static Value undefined() { return {}; }
  static Value null();
  static Value from_bool(bool b);
  static Value integer(double n);
  static Value floating(double n);
  static Value str(std::string s);
  static Value list(Array items, Type type = Type::array);
  static Value dict(Object entries, Type type = Type::object);
  static Value callable(Function f);

  bool is_array() const { return type == Type::array || type == Type::tuple; }
  bool is_object() const { return type == Type::object || type == Type::keyword_arguments; }
  bool is_number() const { return type == Type::integer || type == Type::floating; }
  bool truthy() const;
};

// The name @huggingface/jinja gives a value's type in its messages ("StringValue", ...).
const char* type_name(Type type);

// JSON (context variables) to values: integral numbers become integers, as JavaScript's
// Number.isInteger decides; object keys keep their order except that JavaScript lists
// array-index keys ("0", "12") first in ascending order.
Value from_json(const nlohmann::ordered_json& json);

// What {{ value }} prints (undefined and null print nothing; the caller skips them).
std::string to_output(const Value& value);
// JavaScript's String(number): "3", "0.1", "1e+21".
std::string js_number(double n);
// The tojson filter: JSON.stringify's escaping with Python's separators (", " and ": "), or
// `indent` spaces per level; `ensure_ascii` escapes U+007F and above as \uXXXX (UTF-16 units).
struct JsonFormat {
  int indent = 0;
  bool ensure_ascii = false;
  bool sort_keys = false;
  std::string item_separator, key_separator;  // empty: the defaults for `indent`
};
std::string to_json(const Value& value, const JsonFormat& format, int depth = 0,
                    bool undefined_as_null = true);

// JavaScript loose equality (==) of the underlying values, and strict (===) for `in` on lists.
bool loose_equal(const Value& a, const Value& b);
bool strict_equal(const Value& a, const Value& b);

// Strings: JavaScript semantics on UTF-8 text.
bool is_js_space(char32_t c);
std::u32string utf8_to_utf32(const std::string& s);
std::string utf32_to_utf8(const std::u32string& s);
void append_utf8(std::string& out, char32_t c);
size_t utf16_length(const std::string& s);
std::string js_trim(const std::string& s, bool start, bool end);
// The code point that begins at byte `i`, and its length in bytes (1 for malformed bytes).
char32_t decode_at(const std::string& s, size_t i, size_t* length);

}  // namespace ming::text::jinja
