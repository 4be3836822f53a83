// The schema mechanism: every settings struct and file format ming reads or writes describes each
// field once, and that one description reads YAML/JSON, applies `--set a.b=value` overrides,
// writes the resolved file and prints the --help-style reference.
//
// Defaults live only in the C++ structs. A struct opts in by listing its fields once:
//
//   struct Schedule {
//     double learning_rate = 2e-4;
//     Scheduler lr_scheduler_type = Scheduler::cosine;   // an enum with a name table (below)
//     template <class V> void visit(V& v) {
//       v("learning_rate", learning_rate, "peak learning rate");
//       v("lr_scheduler_type", lr_scheduler_type, "how the rate decays after warm-up");
//     }
//   };
//   auto doc = config::load_document("run.yaml");       // YAML or JSON -> JSON tree + lines
//   config::apply_override(doc, "learning_rate=1e-4");  // --set beats the file
//   auto s = config::read<Schedule>(doc);              // unknown keys and bad types throw
//   write_file_atomic(out / "config.yaml", config::to_yaml(config::write(s)));
//   std::cout << config::help_text<Schedule>();         // key, type, default, help per line
//
// A key may carry old names after a '|' ("targets|target"): they are accepted on read (one of
// them at a time), the first name is the one written and documented.
//
// Enums are read and written by name through a table declared next to the enum, found by
// argument-dependent lookup:
//
//   enum class Scheduler { cosine, linear, constant };
//   constexpr config::NameTable<Scheduler, 3> enum_names(Scheduler) {
//     return {{{Scheduler::cosine, "cosine"}, {Scheduler::linear, "linear"},
//              {Scheduler::constant, "constant"}}};
//   }
//   config::parse_enum<Scheduler>("linaer", "lr_scheduler_type")  // UsageError: not one of
//                                                                 // cosine, linear, constant
//                                                                 // (did you mean 'linear'?)
//   config::name_of(Scheduler::linear)                            // "linear"
//
// Every problem in a document is collected and reported together in one UsageError, each line
// naming the file, line and key ("run.yaml:7: unknown key 'learning_rat' (did you mean
// 'learning_rate'?)"). Supported field types: bool, integers, double, std::string, enums with a
// name table, nested visitable structs, std::vector of those, std::map<std::string, scalar> and
// std::optional of scalars (null = unset). A struct's visit may call another struct's visit to
// flatten its fields into the same mapping.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "ming/core/error.h"

namespace ming::config {

using Json = nlohmann::json;

struct Document {
  Json root = Json::object();
  std::string source = "<defaults>";                    // file name for messages
  std::map<std::string, int> line_of;                   // JSON pointer ("/a/b/0") -> 1-based line
  std::string where(const std::string& pointer) const;  // "file:line" or "file"
};

// Parses a YAML file (UsageError naming file and line on a syntax error).
Document load_document(const std::filesystem::path& path);
// Parses YAML text (for tests and for configs embedded in other files).
Document parse_document(const std::string& yaml_text, const std::string& source);
// "a.b.c=value": value parsed as a YAML scalar or flow sequence/map ("[1,2]", "{x: 1}").
// List items are addressed by index ("dataset.0.weight=2"). Creates missing keys (unknown keys
// are then reported by read()). UsageError on a malformed override.
void apply_override(Document& doc, const std::string& assignment);
std::string to_yaml(const Json& value);

// An already parsed JSON value as a document (no line numbers: messages name the source only).
Document make_document(Json root, std::string source);

std::string did_you_mean(const std::string& key, const std::vector<std::string>& candidates);

// ---- enums by name ----------------------------------------------------------------------------

template <typename E, size_t N>
using NameTable = std::array<std::pair<E, std::string_view>, N>;

namespace detail {
template <typename E, typename = void>
struct has_names : std::false_type {};
template <typename E>
struct has_names<E, std::void_t<decltype(enum_names(E{}))>> : std::true_type {};
[[noreturn]] void fail_enum(std::string_view what, std::string_view text,
                            const std::vector<std::string>& names);
[[noreturn]] void fail_enum_value(int value);
}  // namespace detail

template <typename E>
constexpr bool is_named_enum = detail::has_names<E>::value;

// Every name of E in table order.
template <typename E>
std::vector<std::string> enum_names_of() {
  std::vector<std::string> out;
  for (const auto& [value, name] : enum_names(E{})) out.emplace_back(name);
  return out;
}

// "a | b | c": the choices, for help texts.
template <typename E>
std::string enum_choices(std::string_view separator = " | ") {
  std::string out;
  for (const auto& name : enum_names_of<E>())
    out += (out.empty() ? "" : std::string(separator)) + name;
  return out;
}

template <typename E>
std::string_view name_of(E value) {
  for (const auto& [v, name] : enum_names(E{}))
    if (v == value) return name;
  detail::fail_enum_value(static_cast<int>(value));
}

template <typename E>
std::optional<E> find_enum(std::string_view text) {
  for (const auto& [v, name] : enum_names(E{}))
    if (name == text) return v;
  return std::nullopt;
}

// The value named `text`; UsageError "<what>: 'x' is not one of a, b, c (did you mean 'b'?)".
template <typename E>
E parse_enum(std::string_view text, std::string_view what) {
  if (auto v = find_enum<E>(text)) return *v;
  detail::fail_enum(what, text, enum_names_of<E>());
}

namespace detail {

template <typename T, typename = void>
struct is_visitable : std::false_type {};
struct NullVisitor {
  template <typename F>
  void operator()(const char*, F&, const char* = "") {}
};
template <typename T>
struct is_visitable<T,
                    std::void_t<decltype(std::declval<T&>().visit(std::declval<NullVisitor&>()))>>
    : std::true_type {};
template <typename T>
struct is_vector : std::false_type {};
template <typename T>
struct is_vector<std::vector<T>> : std::true_type {};
template <typename T>
struct is_struct_list : std::false_type {};
template <typename T>
struct is_struct_list<std::vector<T>> : is_visitable<T> {};
template <typename T>
struct is_optional : std::false_type {};
template <typename T>
struct is_optional<std::optional<T>> : std::true_type {};
template <typename T>
struct is_string_map : std::false_type {};
template <typename T>
struct is_string_map<std::map<std::string, T>> : std::true_type {};

std::string type_name(const Json& j);

// "targets|target" -> {"targets", "target"}: the written name first, then accepted old names.
std::vector<std::string> key_names(const char* key);
// "/moe/experts" -> "moe.experts"
std::string display(const std::string& pointer);

// Reads one visitable struct from `node` at JSON pointer `pointer`, collecting errors.
class Reader {
 public:
  Reader(const Document& doc, const Json& node, std::string pointer,
         std::vector<std::string>& errors)
      : doc_(doc), node_(node), pointer_(std::move(pointer)), errors_(errors) {}

  template <typename F>
  void operator()(const char* key, F& field, const char* /*help*/ = "") {
    const auto names = key_names(key);
    known_.insert(known_.end(), names.begin(), names.end());
    if (!node_.is_object()) return;
    const char* given = nullptr;
    for (const auto& name : names) {
      auto it = node_.find(name);
      if (it == node_.end()) continue;
      if (given) {
        errors_.push_back(doc_.where(pointer_ + "/" + name) + ": key '" +
                          display(pointer_ + "/" + name) + "' and '" +
                          display(pointer_ + "/" + given) + "' are the same setting; give one");
        continue;
      }
      given = it.key().c_str();
      read_value(*it, pointer_ + "/" + name, field);
    }
  }

  // Reports keys present in the node that no field consumed.
  void finish() {
    if (!node_.is_object()) {
      errors_.push_back(doc_.where(pointer_) + ": expected a mapping of keys, got " +
                        type_name(node_));
      return;
    }
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      bool found = false;
      for (const auto& k : known_) found = found || k == it.key();
      if (!found)
        errors_.push_back(doc_.where(pointer_ + "/" + it.key()) + ": unknown key '" +
                          display(pointer_ + "/" + it.key()) + "'" +
                          did_you_mean(it.key(), known_));
    }
  }

 private:
  void bad(const std::string& pointer, const std::string& expected, const Json& got) {
    errors_.push_back(doc_.where(pointer) + ": key '" + display(pointer) + "': expected " +
                      expected + ", got " + type_name(got) + " " + got.dump());
  }

  template <typename F>
  void read_value(const Json& j, const std::string& pointer, F& field) {
    if constexpr (std::is_enum_v<F>) {
      static_assert(is_named_enum<F>, "an enum field needs a name table (enum_names)");
      if (!j.is_string()) {
        bad(pointer, "one of " + enum_choices<F>(", "), j);
      } else if (auto v = find_enum<F>(j.get_ref<const std::string&>())) {
        field = *v;
      } else {
        const auto names = enum_names_of<F>();
        errors_.push_back(doc_.where(pointer) + ": key '" + display(pointer) + "': '" +
                          j.get<std::string>() + "' is not one of " + enum_choices<F>(", ") +
                          did_you_mean(j.get<std::string>(), names));
      }
    } else if constexpr (std::is_same_v<F, bool>) {
      if (j.is_boolean())
        field = j.get<bool>();
      else
        bad(pointer, "true or false", j);
    } else if constexpr (std::is_integral_v<F>) {
      if (j.is_number_integer())
        field = j.get<F>();
      else if (j.is_number_float() &&
               j.get<double>() == static_cast<double>(static_cast<int64_t>(j.get<double>())))
        field = static_cast<F>(j.get<double>());
      else
        bad(pointer, "an integer", j);
    } else if constexpr (std::is_floating_point_v<F>) {
      if (j.is_number())
        field = j.get<F>();
      else
        bad(pointer, "a number", j);
    } else if constexpr (std::is_same_v<F, std::string>) {
      if (j.is_string())
        field = j.get<std::string>();
      else if (j.is_number() || j.is_boolean())
        field = j.dump();
      else
        bad(pointer, "a string", j);
    } else if constexpr (is_optional<F>::value) {
      if (j.is_null()) {
        field.reset();
      } else {
        typename F::value_type v{};
        read_value(j, pointer, v);
        field = v;
      }
    } else if constexpr (is_vector<F>::value) {
      using E = typename F::value_type;
      if (!j.is_array()) {
        // A single scalar where a list is expected is the one-element list (lora_target: q_proj).
        if constexpr (!is_visitable<E>::value) {
          if (!j.is_object() && !j.is_null()) {
            E v{};
            read_value(j, pointer, v);
            field = {v};
            return;
          }
        }
        bad(pointer, "a list", j);
        return;
      }
      F out;
      for (size_t i = 0; i < j.size(); ++i) {
        E v{};
        read_value(j[i], pointer + "/" + std::to_string(i), v);
        out.push_back(std::move(v));
      }
      field = std::move(out);
    } else if constexpr (is_string_map<F>::value) {
      if (!j.is_object()) {
        bad(pointer, "a mapping", j);
        return;
      }
      F out;
      for (auto it = j.begin(); it != j.end(); ++it) {
        typename F::mapped_type v{};
        read_value(*it, pointer + "/" + it.key(), v);
        out.emplace(it.key(), std::move(v));
      }
      field = std::move(out);
    } else if constexpr (is_visitable<F>::value) {
      Reader sub(doc_, j, pointer, errors_);
      field.visit(sub);
      sub.finish();
    } else {
      static_assert(sizeof(F) == 0, "config field type not supported");
    }
  }

  const Document& doc_;
  const Json& node_;
  std::string pointer_;
  std::vector<std::string>& errors_;
  std::vector<std::string> known_;
};

class Writer {
 public:
  explicit Writer(Json& node) : node_(node) { node_ = Json::object(); }
  template <typename F>
  void operator()(const char* key, F& field, const char* = "") {
    node_[key_names(key).front()] = to_json(field);
  }

  template <typename F>
  static Json to_json(F& field) {
    if constexpr (std::is_enum_v<F>) {
      return Json(std::string(name_of(field)));
    } else if constexpr (is_optional<F>::value) {
      return field ? to_json(*field) : Json(nullptr);
    } else if constexpr (is_vector<F>::value) {
      Json arr = Json::array();
      for (auto& e : field) arr.push_back(to_json(e));
      return arr;
    } else if constexpr (is_string_map<F>::value) {
      Json obj = Json::object();
      for (auto& [k, v] : field) obj[k] = to_json(v);
      return obj;
    } else if constexpr (is_visitable<F>::value) {
      Json sub;
      Writer w(sub);
      field.visit(w);
      return sub;
    } else {
      return Json(field);
    }
  }

 private:
  Json& node_;
};

// What describe() collects: one row per leaf key.
template <typename F>
std::string type_label() {
  if constexpr (std::is_enum_v<F>) {
    return enum_choices<F>();
  } else if constexpr (std::is_same_v<F, bool>) {
    return "bool";
  } else if constexpr (std::is_integral_v<F>) {
    return "int";
  } else if constexpr (std::is_floating_point_v<F>) {
    return "number";
  } else if constexpr (std::is_same_v<F, std::string>) {
    return "string";
  } else if constexpr (is_optional<F>::value) {
    return type_label<typename F::value_type>() + " or null";
  } else if constexpr (is_vector<F>::value) {
    return "list of " + type_label<typename F::value_type>();
  } else if constexpr (is_string_map<F>::value) {
    return "mapping of " + type_label<typename F::mapped_type>();
  } else {
    return "mapping";
  }
}

}  // namespace detail

// One documented setting: "moe.top_k", "int", "2", "experts chosen per token".
struct FieldDoc {
  std::string key;            // dotted path; list items as "dataset[].path"
  std::string type;           // bool | int | number | string | a | b | c | list of ... | ...
  std::string default_value;  // the default as YAML ("" for list items)
  std::string help;
  std::vector<std::string> aliases;  // old names still accepted on read
};

namespace detail {

class Describer {
 public:
  Describer(std::vector<FieldDoc>& rows, std::string prefix)
      : rows_(rows), prefix_(std::move(prefix)) {}
  template <typename F>
  void operator()(const char* key, F& field, const char* help = "") {
    auto names = key_names(key);
    const std::string path = prefix_ + names.front();
    if constexpr (is_visitable<F>::value) {
      Describer sub(rows_, path + ".");
      field.visit(sub);
    } else if constexpr (is_struct_list<F>::value) {
      rows_.push_back({path, "list", default_text(Writer::to_json(field)), help, {}});
      typename F::value_type item{};
      Describer sub(rows_, path + "[].");
      item.visit(sub);
    } else {
      rows_.push_back({path, type_label<F>(), default_text(Writer::to_json(field)), help,
                       std::vector<std::string>(names.begin() + 1, names.end())});
    }
  }

 private:
  static std::string default_text(const Json& j);
  std::vector<FieldDoc>& rows_;
  std::string prefix_;
};

[[noreturn]] void throw_errors(const Document& doc, const std::vector<std::string>& errors);

}  // namespace detail

// Reads into an existing value: fields the document leaves out keep the values `out` has.
template <typename T>
void read_into(const Document& doc, T& out, const std::string& pointer = "") {
  std::vector<std::string> errors;
  const Json& node = pointer.empty() ? doc.root : doc.root.at(Json::json_pointer(pointer));
  detail::Reader reader(doc, node, pointer, errors);
  out.visit(reader);
  reader.finish();
  if (!errors.empty()) detail::throw_errors(doc, errors);
}

// Reads a visitable struct from the document's root (or the mapping at `pointer`, e.g. "/moe").
// All unknown keys and type errors are reported together.
template <typename T>
T read(const Document& doc, const std::string& pointer = "") {
  T out{};
  read_into(doc, out, pointer);
  return out;
}

// The struct as JSON (every field, defaults included): what actually ran.
template <typename T>
Json write(const T& value) {
  Json node;
  detail::Writer w(node);
  const_cast<T&>(value).visit(w);  // the writer only reads the fields
  return node;
}

// Every key of T with its type, default (taken from `defaults`) and help, in declaration order.
template <typename T>
std::vector<FieldDoc> describe(const T& defaults = T{}) {
  std::vector<FieldDoc> rows;
  detail::Describer d(rows, "");
  const_cast<T&>(defaults).visit(d);  // the describer only reads the fields
  return rows;
}

// The rows as an aligned reference, one key a line:
//   moe.top_k      int     2       experts chosen per token
std::string format_help(const std::vector<FieldDoc>& rows);

template <typename T>
std::string help_text(const T& defaults = T{}) {
  return format_help(describe(defaults));
}

}  // namespace ming::config
