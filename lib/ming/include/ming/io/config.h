// YAML configs with `--set a.b=value` overrides, read into plain option structs.
//
// Defaults live only in the C++ structs. A struct opts in by listing its fields once:
//
//   struct Schedule {
//     double learning_rate = 2e-4;
//     std::string lr_scheduler_type = "cosine";
//     template <class V> void visit(V& v) {
//       v("learning_rate", learning_rate, "peak learning rate");
//       v("lr_scheduler_type", lr_scheduler_type, "cosine | linear | constant");
//     }
//   };
//   auto doc = config::load_document("run.yaml");       // YAML -> JSON tree + line numbers
//   config::apply_override(doc, "learning_rate=1e-4");  // --set beats the file
//   auto s = config::read<Schedule>(doc);              // unknown keys and bad types throw
//   write_file_atomic(out / "config.yaml", config::to_yaml(config::write(s)));
//
// Every problem in a document is collected and reported together in one UsageError, each line
// naming the file, line and key ("run.yaml:7: unknown key 'learning_rat' (did you mean
// 'learning_rate'?)"). Supported field types: bool, integers, double, std::string, nested
// visitable structs, std::vector of those, and std::optional of scalars (null = unset).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
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

std::string did_you_mean(const std::string& key, const std::vector<std::string>& candidates);

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
struct is_optional : std::false_type {};
template <typename T>
struct is_optional<std::optional<T>> : std::true_type {};

std::string type_name(const Json& j);

// Reads one visitable struct from `node` at JSON pointer `pointer`, collecting errors.
class Reader {
 public:
  Reader(const Document& doc, const Json& node, std::string pointer,
         std::vector<std::string>& errors)
      : doc_(doc), node_(node), pointer_(std::move(pointer)), errors_(errors) {}

  template <typename F>
  void operator()(const char* key, F& field, const char* /*help*/ = "") {
    known_.push_back(key);
    if (!node_.is_object()) return;
    auto it = node_.find(key);
    if (it == node_.end()) return;
    read_value(*it, pointer_ + "/" + key, key, field);
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
  static std::string display(const std::string& pointer) {
    std::string s = pointer.empty() ? "" : pointer.substr(1);
    for (char& c : s)
      if (c == '/') c = '.';
    return s;
  }
  void bad(const std::string& pointer, const std::string& expected, const Json& got) {
    errors_.push_back(doc_.where(pointer) + ": key '" + display(pointer) + "': expected " +
                      expected + ", got " + type_name(got) + " " + got.dump());
  }

  template <typename F>
  void read_value(const Json& j, const std::string& pointer, const char* key, F& field) {
    if constexpr (std::is_same_v<F, bool>) {
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
        read_value(j, pointer, key, v);
        field = v;
      }
    } else if constexpr (is_vector<F>::value) {
      using E = typename F::value_type;
      if (!j.is_array()) {
        // A single scalar where a list is expected is the one-element list (lora_target: q_proj).
        if constexpr (!is_visitable<E>::value) {
          if (!j.is_object() && !j.is_null()) {
            E v{};
            read_value(j, pointer, key, v);
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
        read_value(j[i], pointer + "/" + std::to_string(i), key, v);
        out.push_back(std::move(v));
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
    node_[key] = to_json(field);
  }

 private:
  template <typename F>
  static Json to_json(F& field) {
    if constexpr (is_optional<F>::value) {
      return field ? to_json(*field) : Json(nullptr);
    } else if constexpr (is_vector<F>::value) {
      Json arr = Json::array();
      for (auto& e : field) arr.push_back(to_json(e));
      return arr;
    } else if constexpr (is_visitable<F>::value) {
      Json sub;
      Writer w(sub);
      field.visit(w);
      return sub;
    } else {
      return Json(field);
    }
  }
  Json& node_;
};

[[noreturn]] void throw_errors(const Document& doc, const std::vector<std::string>& errors);

}  // namespace detail

// Reads a visitable struct from the document's root (or the mapping at `pointer`, e.g. "/moe").
// All unknown keys and type errors are reported together.
template <typename T>
T read(const Document& doc, const std::string& pointer = "") {
  T out{};
  std::vector<std::string> errors;
  const Json& node = pointer.empty() ? doc.root : doc.root.at(Json::json_pointer(pointer));
  detail::Reader reader(doc, node, pointer, errors);
  out.visit(reader);
  reader.finish();
  if (!errors.empty()) detail::throw_errors(doc, errors);
  return out;
}

// The struct as JSON (every field, defaults included): what actually ran.
template <typename T>
Json write(T& value) {
  Json node;
  detail::Writer w(node);
  value.visit(w);
  return node;
}

}  // namespace ming::config
