#include "ming/io/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <regex>
#include <sstream>

#include <fmt/ranges.h>

#include "ming/io/files.h"
#include "ming/io/json.h"

namespace ming::config {
namespace {

// Plain YAML scalars become typed JSON values the way YAML 1.2's core schema reads them;
// quoted scalars stay strings.
Json scalar_to_json(const YAML::Node& node) {
  const std::string& s = node.Scalar();
  if (node.Tag() == "!") return s;  // quoted
  static const std::regex int_re(R"([-+]?[0-9]+)");
  static const std::regex float_re(R"([-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?)");
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  if (s == "null" || s == "Null" || s == "NULL" || s == "~") return nullptr;
  if (std::regex_match(s, int_re)) {
    try {
      return std::stoll(s);
    } catch (const std::out_of_range&) {
      return s;
    }
  }
  if (std::regex_match(s, float_re)) return std::stod(s);
  if (s == ".inf" || s == "+.inf") return std::numeric_limits<double>::infinity();
  if (s == "-.inf") return -std::numeric_limits<double>::infinity();
  return s;
}

Json to_json(const YAML::Node& node, const std::string& pointer,
             std::map<std::string, int>& lines) {
  if (node.Mark().line >= 0) lines[pointer] = node.Mark().line + 1;
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Scalar:
      return scalar_to_json(node);
    case YAML::NodeType::Sequence: {
      Json arr = Json::array();
      for (size_t i = 0; i < node.size(); ++i)
        arr.push_back(to_json(node[i], pointer + "/" + std::to_string(i), lines));
      return arr;
    }
    case YAML::NodeType::Map: {
      Json obj = Json::object();
      for (const auto& kv : node) {
        std::string key = kv.first.as<std::string>();
        std::string child = pointer + "/" + key;
        if (kv.first.Mark().line >= 0) lines[child] = kv.first.Mark().line + 1;
        Json value = to_json(kv.second, child, lines);
        if (kv.first.Mark().line >= 0) lines[child] = kv.first.Mark().line + 1;
        obj[key] = std::move(value);
      }
      return obj;
    }
  }
  return nullptr;
}

void emit(YAML::Emitter& out, const Json& j) {
  if (j.is_object()) {
    out << YAML::BeginMap;
    for (auto it = j.begin(); it != j.end(); ++it) {
      out << YAML::Key << it.key() << YAML::Value;
      emit(out, *it);
    }
    out << YAML::EndMap;
  } else if (j.is_array()) {
    bool flat = std::all_of(j.begin(), j.end(), [](const Json& e) { return e.is_primitive(); });
    out << (flat ? YAML::Flow : YAML::Block) << YAML::BeginSeq;
    for (const auto& e : j) emit(out, e);
    out << YAML::EndSeq;
  } else if (j.is_string()) {
    const std::string& s = j.get_ref<const std::string&>();
    // Keep strings that would read back as another type quoted.
    Json reread = scalar_to_json(YAML::Load(s.empty() ? "''" : s));
    if (s.empty() || !reread.is_string() || reread.get<std::string>() != s)
      out << YAML::DoubleQuoted << s;
    else
      out << s;
  } else if (j.is_null()) {
    out << YAML::Null;
  } else if (j.is_boolean()) {
    out << j.get<bool>();
  } else if (j.is_number_integer()) {
    out << j.get<int64_t>();
  } else {
    out << YAML::Precision(17) << j.get<double>();
  }
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

std::string Document::where(const std::string& pointer) const {
  // The nearest enclosing node with a known line.
  std::string p = pointer;
  while (true) {
    auto it = line_of.find(p);
    if (it != line_of.end()) return source + ":" + std::to_string(it->second);
    auto slash = p.rfind('/');
    if (slash == std::string::npos || p.empty()) return source;
    p = p.substr(0, slash);
  }
}

Document parse_document(const std::string& yaml_text, const std::string& source) {
  Document doc;
  doc.source = source;
  // yaml-cpp parses flow collections recursively: refuse absurd nesting before it does (the
  // count includes brackets in quoted text, which only matters past 1000 levels anyway).
  int depth = 0;
  for (const char c : yaml_text) {
    depth += (c == '[' || c == '{') - (c == ']' || c == '}');
    if (depth > io::kMaxJsonDepth)
      fail_usage("{}: nested deeper than {} levels", source, io::kMaxJsonDepth);
  }
  YAML::Node node;
  try {
    node = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    fail_usage("{}:{}: invalid YAML: {}", source, e.mark.line + 1, e.msg);
  }
  if (node.IsNull()) return doc;
  if (!node.IsMap()) fail_usage("{}: expected a mapping of keys at the top level", source);
  doc.root = to_json(node, "", doc.line_of);
  return doc;
}

Document make_document(Json root, std::string source) {
  Document doc;
  doc.root = std::move(root);
  doc.source = std::move(source);
  return doc;
}

Document load_document(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) fail_usage("config file '{}' does not exist", path.string());
  return parse_document(io::read_file(path), path.string());
}

void apply_override(Document& doc, const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    fail_usage("--set '{}': expected key=value (e.g. --set learning_rate=1e-4)", assignment);
  std::string key = assignment.substr(0, eq);
  std::string text = assignment.substr(eq + 1);
  Json value;
  try {
    std::map<std::string, int> ignored;
    YAML::Node node = YAML::Load(text.empty() ? "''" : text);
    value = to_json(node, "", ignored);
  } catch (const YAML::Exception& e) {
    fail_usage("--set '{}': value is not valid YAML: {}", assignment, e.msg);
  }
  Json* cur = &doc.root;
  std::string pointer;
  std::stringstream parts(key);
  std::string part;
  std::vector<std::string> path;
  while (std::getline(parts, part, '.')) path.push_back(part);
  for (size_t i = 0; i < path.size(); ++i) {
    const std::string& p = path[i];
    if (p.empty()) fail_usage("--set '{}': empty key segment", assignment);
    pointer += "/" + p;
    bool last = i + 1 == path.size();
    if (cur->is_array()) {
      size_t index = 0;
      try {
        index = std::stoul(p);
      } catch (const std::exception&) {
        fail_usage("--set '{}': '{}' is a list; address its items by index", assignment,
                   key.substr(0, key.find(p) - 1));
      }
      if (index > cur->size())
        fail_usage("--set '{}': index {} is past the end of a list of {}", assignment, index,
                   cur->size());
      if (index == cur->size()) cur->push_back(last ? Json() : Json::object());
      cur = &(*cur)[index];
    } else {
      if (!cur->is_object()) *cur = Json::object();
      cur = &(*cur)[p];
    }
    doc.line_of.erase(pointer);
  }
  *cur = value;
}

std::string format_help(const std::vector<FieldDoc>& rows) {
  size_t key_width = 0, type_width = 0, default_width = 0;
  for (const auto& r : rows) {
    key_width = std::max(key_width, r.key.size());
    type_width = std::max(type_width, r.type.size());
    default_width = std::max(default_width, r.default_value.size());
  }
  // Long defaults (lists of datasets) and long choice lists would push the help off the screen.
  type_width = std::min<size_t>(type_width, 28);
  default_width = std::min<size_t>(default_width, 24);
  std::string out;
  for (const auto& r : rows) {
    std::string line = fmt::format("  {:<{}}  {:<{}}  {:<{}}  {}", r.key, key_width, r.type,
                                   type_width, r.default_value, default_width, r.help);
    if (!r.aliases.empty()) line += fmt::format(" (also read as: {})", fmt::join(r.aliases, ", "));
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string to_yaml(const Json& value) {
  YAML::Emitter out;
  emit(out, value);
  return std::string(out.c_str()) + "\n";
}

std::string did_you_mean(const std::string& key, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::max<size_t>(3, key.size() / 3) + 1;
  for (const auto& c : candidates) {
    size_t d = edit_distance(key, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best.empty() ? "" : " (did you mean '" + best + "'?)";
}

namespace detail {

void fail_enum(std::string_view what, std::string_view text,
               const std::vector<std::string>& names) {
  fail_usage("{}: '{}' is not one of {}{}", what, text, fmt::join(names, ", "),
             did_you_mean(std::string(text), names));
}

void fail_enum_value(int value) {
  fail("enum value {} has no name in its table", value);
}

std::vector<std::string> key_names(const char* key) {
  std::vector<std::string> names;
  std::string_view rest(key);
  while (true) {
    const auto bar = rest.find('|');
    names.emplace_back(rest.substr(0, bar));
    if (bar == std::string_view::npos) return names;
    rest.remove_prefix(bar + 1);
  }
}

std::string display(const std::string& pointer) {
  std::string s = pointer.empty() ? "" : pointer.substr(1);
  for (char& c : s)
    if (c == '/') c = '.';
  return s;
}

std::string Describer::default_text(const Json& j) {
  // Shortest forms (0.0002, not YAML's 17 digits); strings bare unless empty.
  if (j.is_string()) return j.get_ref<const std::string&>().empty() ? "\"\"" : j.get<std::string>();
  return j.dump();
}

std::string type_name(const Json& j) {
  if (j.is_string()) return "a string";
  if (j.is_boolean()) return "a boolean";
  if (j.is_number()) return "a number";
  if (j.is_array()) return "a list";
  if (j.is_object()) return "a mapping";
  return "null";
}

void throw_errors(const Document& doc, const std::vector<std::string>& errors) {
  std::string message = errors.size() == 1 ? errors[0]
                                           : fmt::format("{} problems in {}:\n  {}", errors.size(),
                                                         doc.source, fmt::join(errors, "\n  "));
  throw UsageError(message);
}

}  // namespace detail
}  // namespace ming::config
