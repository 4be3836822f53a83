// Runtime values: construction, conversion from JSON, printing, JSON output and equality, with
// the JavaScript semantics @huggingface/jinja has.
#include "value.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace ming::text::jinja {

const Value* Object::find(const std::string& key) const {
  for (const auto& [k, v] : entries)
    if (k == key) return &v;
  return nullptr;
}

void Object::set(const std::string& key, Value value) {
  for (auto& [k, v] : entries)
    if (k == key) {
      v = std::move(value);
      return;
    }
  entries.emplace_back(key, std::move(value));
}

Value Value::null() {
  Value v;
  v.type = Type::null;
  return v;
}
Value Value::from_bool(bool b) {
  Value v;
  v.type = Type::boolean;
  v.boolean = b;
  return v;
}
Value Value::integer(double n) {
  Value v;
  v.type = Type::integer;
  v.number = n;
  return v;
}
Value Value::floating(double n) {
  Value v;
  v.type = Type::floating;
  v.number = n;
  return v;
}
Value Value::str(std::string s) {
  Value v;
  v.type = Type::string;
  v.string = std::move(s);
  return v;
}
Value Value::list(Array items, Type type) {
  Value v;
  v.type = type;
  v.array = std::make_shared<Array>(std::move(items));
  return v;
}
Value Value::dict(Object entries, Type type) {
  Value v;
  v.type = type;
  v.object = std::make_shared<Object>(std::move(entries));
  return v;
}
Value Value::callable(Function f) {
  Value v;
  v.type = Type::function;
  v.function = std::make_shared<Function>(std::move(f));
  return v;
}

bool Value::truthy() const {
  switch (type) {
    case Type::undefined:
    case Type::null:
      return false;
    case Type::boolean:
      return boolean;
    case Type::integer:
    case Type::floating:
      return number != 0 && !std::isnan(number);
    case Type::string:
      return !string.empty();
    case Type::array:
    case Type::tuple:
      return !array->empty();
    case Type::object:
    case Type::keyword_arguments:
      return !object->entries.empty();
    case Type::namespace_:
    case Type::function:
      return true;
  }
  return false;
}

const char* type_name(Type type) {
  switch (type) {
    case Type::undefined:
      return "UndefinedValue";
    case Type::null:
      return "NullValue";
    case Type::boolean:
      return "BooleanValue";
    case Type::integer:
      return "IntegerValue";
    case Type::floating:
      return "FloatValue";
    case Type::string:
      return "StringValue";
    case Type::array:
      return "ArrayValue";
    case Type::tuple:
      return "TupleValue";
    case Type::object:
      return "ObjectValue";
    case Type::keyword_arguments:
      return "KeywordArgumentsValue";
    case Type::namespace_:
      return "NamespaceValue";
    case Type::function:
      return "FunctionValue";
  }
  return "?";
}

namespace {

bool is_array_index(const std::string& key) {
  if (key.empty() || key.size() > 10) return false;
  if (key.size() > 1 && key[0] == '0') return false;
  for (char c : key)
    if (c < '0' || c > '9') return false;
  return std::stoull(key) < 4294967295ULL;
}

}  // namespace

Value from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      return Value::null();
    case nlohmann::ordered_json::value_t::boolean:
      return Value::from_bool(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
    case nlohmann::ordered_json::value_t::number_unsigned:
      return Value::integer(j.get<double>());
    case nlohmann::ordered_json::value_t::number_float: {
      const double d = j.get<double>();
      return std::isfinite(d) && std::floor(d) == d ? Value::integer(d) : Value::floating(d);
    }
    case nlohmann::ordered_json::value_t::string:
      return Value::str(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      Array items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json(e));
      return Value::list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Object o;
      std::vector<std::pair<unsigned long long, std::string>> indices;
      for (const auto& [k, v] : j.items())
        if (is_array_index(k)) indices.emplace_back(std::stoull(k), k);
      std::sort(indices.begin(), indices.end());
      for (const auto& [n, k] : indices) o.entries.emplace_back(k, from_json(j.at(k)));
      for (const auto& [k, v] : j.items())
        if (!is_array_index(k)) o.entries.emplace_back(k, from_json(v));
      return Value::dict(std::move(o));
    }
    default:
      return Value::undefined();
  }
}

std::string js_number(double n) {
  if (std::isnan(n)) return "NaN";
  if (std::isinf(n)) return n > 0 ? "Infinity" : "-Infinity";
  if (n == 0) return "0";
  std::string sign = n < 0 ? "-" : "";
  const double a = std::fabs(n);
  // The shortest digits that read back as the same double, as ECMAScript's Number::toString.
  char buf[40];
  int precision = 1;
  for (; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*e", precision - 1, a);
    if (std::strtod(buf, nullptr) == a) break;
  }
  std::string s = buf;
  const size_t e = s.find('e');
  std::string digits;
  for (size_t i = 0; i < e; ++i)
    if (s[i] != '.') digits += s[i];
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  const int exponent = std::atoi(s.c_str() + e + 1);
  const int k = static_cast<int>(digits.size());
  const int point = exponent + 1;  // digits d1..dk times 10^(point-k)
  std::string out;
  if (k <= point && point <= 21) {
    out = digits + std::string(point - k, '0');
  } else if (0 < point && point <= 21) {
    out = digits.substr(0, point) + "." + digits.substr(point);
  } else if (-6 < point && point <= 0) {
    out = "0." + std::string(-point, '0') + digits;
  } else {
    out = digits.substr(0, 1);
    if (k > 1) out += "." + digits.substr(1);
    out += (point - 1 >= 0 ? "e+" : "e-") + std::to_string(std::abs(point - 1));
  }
  return sign + out;
}

std::string to_output(const Value& v) {
  switch (v.type) {
    case Type::undefined:
      return "undefined";
    case Type::null:
      return "null";
    case Type::boolean:
      return v.boolean ? "true" : "false";
    case Type::integer:
      return js_number(v.number);
    case Type::floating:
      if (v.number == 0 && std::signbit(v.number)) return "-0.0";
      if (std::isfinite(v.number) && std::floor(v.number) == v.number) {
        char buf[400];
        std::snprintf(buf, sizeof buf, "%.1f", v.number);
        return buf;
      }
      return js_number(v.number);
    case Type::string:
      return v.string;
    case Type::array:
    case Type::tuple:
    case Type::object:
    case Type::keyword_arguments:
    case Type::namespace_:
      return to_json(v, {}, 0, false);
    case Type::function:
      return "[function]";
  }
  return "";
}

namespace {

void append_hex4(std::string& out, unsigned unit) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "\\u%04x", unit);
  out += buf;
}

std::string json_string(const std::string& s, bool ensure_ascii) {
  std::string out = "\"";
  size_t i = 0;
  while (i < s.size()) {
    size_t len = 1;
    const char32_t c = decode_at(s, i, &len);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          append_hex4(out, c);
        } else if (ensure_ascii && c >= 0x7f) {
          if (c >= 0x10000) {
            append_hex4(out, 0xD800 + ((c - 0x10000) >> 10));
            append_hex4(out, 0xDC00 + ((c - 0x10000) & 0x3FF));
          } else {
            append_hex4(out, c);
          }
        } else {
          out.append(s, i, len);
        }
    }
    i += len;
  }
  return out + "\"";
}

// JavaScript's String.prototype.localeCompare for sort_keys, reduced to code point order.
bool key_less(const std::pair<std::string, Value>* a, const std::pair<std::string, Value>* b) {
  return a->first < b->first;
}

}  // namespace

std::string to_json(const Value& v, const JsonFormat& f, int depth, bool undefined_as_null) {
  const std::string item_sep = !f.item_separator.empty() ? f.item_separator
                               : f.indent > 0            ? ","
                                                         : ", ";
  const std::string key_sep = !f.key_separator.empty() ? f.key_separator : ": ";
  switch (v.type) {
    case Type::null:
      return "null";
    case Type::undefined:
      return undefined_as_null ? "null" : "undefined";
    case Type::integer:
    case Type::floating:
      return std::isfinite(v.number) ? js_number(v.number) : "null";
    case Type::boolean:
      return v.boolean ? "true" : "false";
    case Type::string:
      return json_string(v.string, f.ensure_ascii);
    case Type::array:
    case Type::tuple:
    case Type::object:
    case Type::keyword_arguments:
    case Type::namespace_: {
      const std::string indent(static_cast<size_t>(std::max(f.indent, 0)), ' ');
      std::string base = "\n";
      for (int i = 0; i < depth; ++i) base += indent;
      const std::string child = base + indent;
      std::vector<std::string> core;
      if (v.is_array()) {
        for (const auto& e : *v.array) core.push_back(to_json(e, f, depth + 1, undefined_as_null));
      } else {
        std::vector<const std::pair<std::string, Value>*> entries;
        for (const auto& e : v.object->entries) entries.push_back(&e);
        if (f.sort_keys) std::stable_sort(entries.begin(), entries.end(), key_less);
        for (const auto* e : entries) {
          std::string item = json_string(e->first, f.ensure_ascii) + key_sep +
                             to_json(e->second, f, depth + 1, undefined_as_null);
          core.push_back(f.indent > 0 ? child + item : item);
        }
      }
      const bool array = v.is_array();
      std::string out(1, array ? '[' : '{');
      if (f.indent > 0 && !core.empty()) {
        for (size_t i = 0; i < core.size(); ++i) {
          if (i) out += item_sep;
          if (array) out += child;
          out += core[i];
        }
        out += base;
      } else {
        for (size_t i = 0; i < core.size(); ++i) {
          if (i) out += item_sep;
          out += core[i];
        }
      }
      out += array ? ']' : '}';
      return out;
    }
    case Type::function:
      break;
  }
  return "null";
}

namespace {

// JavaScript's ToNumber on a string: surrounding whitespace ignored, "" is 0, else a decimal
// (or 0x/0o/0b) literal or NaN.
double js_string_to_number(const std::string& s) {
  const std::string t = js_trim(s, true, true);
  if (t.empty()) return 0;
  if (t == "Infinity" || t == "+Infinity") return INFINITY;
  if (t == "-Infinity") return -INFINITY;
  int base = 10;
  if (t.size() > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X')) base = 16;
  if (t.size() > 2 && t[0] == '0' && (t[1] == 'o' || t[1] == 'O')) base = 8;
  if (t.size() > 2 && t[0] == '0' && (t[1] == 'b' || t[1] == 'B')) base = 2;
  char* end = nullptr;
  double d = 0;
  if (base == 10) {
    if (t.find_first_of("xXnN") != std::string::npos) return NAN;  // no hex floats, no NaN text
    d = std::strtod(t.c_str(), &end);
  } else {
    d = static_cast<double>(std::strtoull(t.c_str() + 2, &end, base));
  }
  return end && *end == '\0' ? d : NAN;
}

double numeric(const Value& v) {
  if (v.type == Type::boolean) return v.boolean ? 1 : 0;
  if (v.type == Type::string) return js_string_to_number(v.string);
  return v.number;
}

bool is_reference(Type t) {
  return t == Type::array || t == Type::tuple || t == Type::object ||
         t == Type::keyword_arguments || t == Type::namespace_ || t == Type::function;
}

const void* identity(const Value& v) {
  if (v.array) return v.array.get();
  if (v.object) return v.object.get();
  return v.function.get();
}

}  // namespace

bool loose_equal(const Value& a, const Value& b) {
  const bool a_nullish = a.type == Type::undefined || a.type == Type::null;
  const bool b_nullish = b.type == Type::undefined || b.type == Type::null;
  if (a_nullish || b_nullish) return a_nullish && b_nullish;
  if (is_reference(a.type) || is_reference(b.type))
    return is_reference(a.type) && is_reference(b.type) && identity(a) == identity(b);
  if (a.type == Type::string && b.type == Type::string) return a.string == b.string;
  return numeric(a) == numeric(b);
}

bool strict_equal(const Value& a, const Value& b) {
  const bool a_num = a.is_number(), b_num = b.is_number();
  if (a_num || b_num) return a_num && b_num && a.number == b.number;
  if (a.type != b.type) {
    // The wrapped JavaScript values: undefined and null differ, references compare by identity.
    if (is_reference(a.type) && is_reference(b.type)) return identity(a) == identity(b);
    return false;
  }
  switch (a.type) {
    case Type::undefined:
    case Type::null:
      return true;
    case Type::boolean:
      return a.boolean == b.boolean;
    case Type::string:
      return a.string == b.string;
    default:
      return identity(a) == identity(b);
  }
}

bool is_js_space(char32_t c) {
  return c == ' ' || (c >= 0x09 && c <= 0x0D) || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000 || c == 0xFEFF;
}

char32_t decode_at(const std::string& s, size_t i, size_t* length) {
  const auto c = static_cast<unsigned char>(s[i]);
  size_t n = 0;
  char32_t cp = 0;
  if (c < 0x80) {
    *length = 1;
    return c;
  } else if ((c >> 5) == 0x6) {
    n = 1, cp = c & 0x1F;
  } else if ((c >> 4) == 0xE) {
    n = 2, cp = c & 0x0F;
  } else if ((c >> 3) == 0x1E) {
    n = 3, cp = c & 0x07;
  } else {
    *length = 1;
    return 0xFFFD;
  }
  if (i + n >= s.size()) {
    *length = 1;
    return 0xFFFD;
  }
  for (size_t k = 1; k <= n; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) {
      *length = 1;
      return 0xFFFD;
    }
    cp = (cp << 6) | (cc & 0x3F);
  }
  *length = n + 1;
  return cp;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

std::u32string utf8_to_utf32(const std::string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t len = 1;
    out += decode_at(s, i, &len);
    i += len;
  }
  return out;
}

std::string utf32_to_utf8(const std::u32string& s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

size_t utf16_length(const std::string& s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size();) {
    size_t len = 1;
    n += decode_at(s, i, &len) >= 0x10000 ? 2 : 1;
    i += len;
  }
  return n;
}

std::string js_trim(const std::string& s, bool start, bool end) {
  size_t b = 0, e = s.size();
  if (start)
    while (b < e) {
      size_t len = 1;
      if (!is_js_space(decode_at(s, b, &len))) break;
      b += len;
    }
  if (end)
    while (e > b) {
      size_t p = e - 1;
      while (p > b && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
      size_t len = 1;
      if (!is_js_space(decode_at(s, p, &len)) || p + len != e) break;
      e = p;
    }
  return s.substr(b, e - b);
}

}  // namespace ming::text::jinja
