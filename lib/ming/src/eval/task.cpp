#include "ming/eval/task.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include <yaml-cpp/yaml.h>

#include "ming/core/error.h"
#include "ming/eval/promptcblue.h"
#include "ming/io/csv.h"
#include "ming/io/json.h"

namespace ming::eval {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::vector<std::pair<Scorer, const char*>> kScorers = {
    {Scorer::loglik_choice, "loglik_choice"},
    {Scorer::generate, "generate"},
    {Scorer::perplexity, "perplexity"}};

const std::vector<std::pair<AnswerParser, const char*>> kParsers = {
    {AnswerParser::option_letter, "option_letter"},
    {AnswerParser::exam_cot, "exam_cot"},
    {AnswerParser::first_letter, "first_letter"},
    {AnswerParser::yes_no_maybe, "yes_no_maybe"},
    {AnswerParser::label, "label"},
    {AnswerParser::entity_list, "entity_list"},
    {AnswerParser::pair_list, "pair_list"},
    {AnswerParser::regex, "regex"},
    {AnswerParser::text, "text"},
    {AnswerParser::promptcblue, "promptcblue"}};

template <typename T>
std::string joined_names(const std::vector<std::pair<T, const char*>>& table) {
  std::string out;
  for (const auto& [v, n] : table) out += (out.empty() ? "" : ", ") + std::string(n);
  return out;
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

// Collects every problem in one file so the user fixes them in one pass.
struct Problems {
  fs::path file;
  std::vector<std::string> lines;
  void add(const YAML::Mark& mark, const std::string& field, const std::string& what) {
    if (mark.is_null())
      lines.push_back(fmt::format("{}: {}: {}", file.string(), field, what));
    else
      lines.push_back(fmt::format("{}:{}:{}: {}: {}", file.string(), mark.line + 1, mark.column + 1,
                                  field, what));
  }
};

void check_keys(Problems& p, const YAML::Node& map, const std::string& where,
                const std::vector<std::string>& allowed) {
  for (const auto& kv : map) {
    std::string key = kv.first.as<std::string>();
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
      p.add(kv.first.Mark(), where.empty() ? key : where + "." + key,
            fmt::format("unknown key (known: {})", join(allowed, ", ")));
  }
}

// Reads map[key] as a scalar string. Missing & required -> problem at the map's position.
bool read_string(Problems& p, const YAML::Node& map, const std::string& key,
                 const std::string& field, std::string* out, bool required) {
  YAML::Node n = map[key];
  if (!n) {
    if (required) p.add(map.Mark(), field, "missing required field");
    return false;
  }
  if (!n.IsScalar()) {
    p.add(n.Mark(), field, "expected a string");
    return false;
  }
  *out = n.as<std::string>();
  if (required && out->empty()) p.add(n.Mark(), field, "must not be empty");
  return true;
}

bool read_string_list(Problems& p, const YAML::Node& map, const std::string& key,
                      const std::string& field, std::vector<std::string>* out) {
  YAML::Node n = map[key];
  if (!n) return false;
  if (!n.IsSequence()) {
    p.add(n.Mark(), field, "expected a list of strings");
    return false;
  }
  out->clear();
  for (const auto& item : n) {
    if (!item.IsScalar()) {
      p.add(item.Mark(), field, "expected a list of strings");
      return false;
    }
    out->push_back(item.as<std::string>());
  }
  return true;
}

std::string as_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  if (v.is_array()) {
    std::string out;
    for (const auto& x : v) out += (out.empty() ? "" : "\n") + as_text(x);
    return out;
  }
  return v.dump();
}

std::string trim_ascii(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::string lower_ascii(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t pos = s.find('\n', start);
    if (pos == std::string::npos) pos = s.size();
    out.push_back(s.substr(start, pos - start));
    start = pos + 1;
  }
  return out;
}

std::vector<std::string> option_keys(const json& record, const std::string& field) {
  std::vector<std::string> keys;
  for (const auto& [k, v] : record_options(record, field)) keys.push_back(k);
  return keys;
}

bool is_option_parser(AnswerParser p) {
  return p == AnswerParser::option_letter || p == AnswerParser::exam_cot ||
         p == AnswerParser::first_letter;
}

// The record field holding a task's lettered options ("" when its gold is not a letter).
std::string letter_options_field(const TaskSpec& spec) {
  if (spec.scorer == Scorer::loglik_choice)
    return spec.continuation_is_letter ? spec.choices_field : "";
  return is_option_parser(spec.parser) ? spec.options_field : "";
}

// The gold letters of `gold` ("B", "ACE", "A, C", ["A", "C"]) sorted and de-duplicated, or a
// UsageError saying which letter is not among `keys`.
std::string canonical_letters(const json& gold, const std::vector<std::string>& keys,
                              const std::string& field) {
  std::string text;
  if (gold.is_array()) {
    for (const auto& g : gold) text += g.is_string() ? g.get<std::string>() : g.dump();
  } else {
    text = as_text(gold);
    if (std::find(keys.begin(), keys.end(), text) != keys.end()) return text;
  }
  std::set<std::string> letters;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ' ' || c == ',' || c == ';' || c == '\t') continue;
    if (text.compare(i, 3, "\xE3\x80\x81") == 0) {  // 、
      i += 2;
      continue;
    }
    const std::string letter(1, c);
    if (!std::isalpha(static_cast<unsigned char>(c)))
      fail_usage("field '{}': answer '{}' is not option letters (options: {})", field, text,
                 join(keys, ", "));
    if (std::find(keys.begin(), keys.end(), letter) == keys.end())
      fail_usage("field '{}': {}answer letter '{}' is not among the options ({})", field,
                 text.size() > 1 ? "answer '" + text + "': " : "", letter, join(keys, ", "));
    letters.insert(letter);
  }
  if (letters.empty())
    fail_usage("field '{}': empty answer (options: {})", field, join(keys, ", "));
  std::string out;
  for (const auto& l : letters) out += l;
  return out;
}

// The letters a parser may return: A-E (MING-MOE's fixed [A-E]) and the record's own options.
std::set<char> exam_letters(const std::vector<std::string>& keys) {
  std::set<char> letters = {'A', 'B', 'C', 'D', 'E'};
  for (const auto& k : keys)
    if (k.size() == 1) letters.insert(k[0]);
  return letters;
}

std::string letters_in(const std::string& text, const std::set<char>& valid) {
  std::set<char> found;
  for (char c : text)
    if (valid.count(c)) found.insert(c);
  return std::string(found.begin(), found.end());
}

// eval_em.py's multiplechoice_acc as a parser. Python's re.search(r'答案为(.*?)$', text) without
// MULTILINE matches only where "答案为" is followed by the rest of the (stripped) text without a
// line break: on the last line.
std::string parse_exam_cot(const std::string& text, const std::vector<std::string>& keys) {
  const std::set<char> valid = exam_letters(keys);
  const size_t nl = text.rfind('\n');
  const std::string last = nl == std::string::npos ? text : text.substr(nl + 1);
  static const std::string kAnswerIs = "答案为";
  if (size_t pos = last.find(kAnswerIs); pos != std::string::npos)
    return letters_in(last.substr(pos + kAnswerIs.size()), valid);
  // "X错，为本题正确答案": the wrong statement X is what a "which is false" question asks for.
  static const std::string kWrongIsAnswer = "错，为本题正确答案";
  for (size_t pos = text.find(kWrongIsAnswer); pos != std::string::npos;
       pos = text.find(kWrongIsAnswer, pos + 1)) {
    size_t b = pos;
    while (b > 0 && valid.count(text[b - 1])) --b;
    if (b < pos) return letters_in(text.substr(b, pos - b), valid);
  }
  // Option-by-option judgements: every X written as "X对" is chosen.
  static const std::string kRight = "对";
  std::string chosen;
  for (char c : valid)
    if (text.find(std::string(1, c) + kRight) != std::string::npos) chosen += c;
  return chosen;
}

// eval_em.py's answer_acc / mmedbench_acc: re.findall(r'[A-E]', text)[0].
std::string parse_first_letter(const std::string& text, const std::vector<std::string>& keys) {
  const std::set<char> valid = exam_letters(keys);
  for (char c : text)
    if (valid.count(c)) return std::string(1, c);
  return "";
}

std::string parse_option_letter(const std::string& raw, const std::vector<std::string>& letters) {
  std::set<std::string> valid(letters.begin(), letters.end());
  if (valid.empty())
    for (char c = 'A'; c <= 'J'; ++c) valid.insert(std::string(1, c));
  const std::string text = trim_ascii(raw);
  // Most specific first: an explicit "answer is X", then a leading letter, then any lone letter.
  static const std::regex explicit_re(
      R"((?:[Aa]nswer|[Oo]ption|[Cc]hoice)\s*(?:is|:)?\s*:?\s*\(?([A-Z])\)?(?![A-Za-z]))");
  static const std::regex leading_re(R"(^\(?([A-Z])\)?(?:[.:)\s,]|$))");
  static const std::regex lone_re(R"((?:^|[^A-Za-z])([A-Z])(?![A-Za-z]))");
  std::smatch m;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), explicit_re);
       it != std::sregex_iterator(); ++it) {
    if (valid.count((*it)[1].str())) return (*it)[1].str();
  }
  if (std::regex_search(text, m, leading_re) && valid.count(m[1].str())) return m[1].str();
  for (auto it = std::sregex_iterator(text.begin(), text.end(), lone_re);
       it != std::sregex_iterator(); ++it)
    if (valid.count((*it)[1].str())) return (*it)[1].str();
  return "";
}

std::string parse_yes_no_maybe(const std::string& text) {
  static const std::regex re(R"((?:^|[^a-z])(yes|no|maybe)(?![a-z]))");
  std::string lower = lower_ascii(text);
  std::smatch m;
  return std::regex_search(lower, m, re) ? m[1].str() : "";
}

std::string parse_label(const std::string& raw, std::vector<std::string> labels) {
  const std::string text = strip_unicode(raw);
  for (const auto& l : labels)
    if (text == l) return l;
  // Longest labels first so that "不相关" wins over "相关" when both match at one place.
  std::stable_sort(labels.begin(), labels.end(),
                   [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (const auto& l : labels)
    if (!l.empty() && text.compare(0, l.size(), l) == 0) return l;
  size_t best_pos = std::string::npos;
  std::string best;
  for (const auto& l : labels) {
    if (l.empty()) continue;
    size_t pos = text.find(l);
    if (pos < best_pos) {
      best_pos = pos;
      best = l;
    }
  }
  return best;
}

json parse_entity_list(const std::string& text) {
  json out = json::array();
  for (const auto& line : split_lines(text)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string type = trim_ascii(line.substr(0, colon));
    std::string rest = line.substr(colon + 1);
    size_t start = 0;
    while (start <= rest.size()) {
      size_t pos = rest.find(';', start);
      if (pos == std::string::npos) pos = rest.size();
      std::string mention = trim_ascii(rest.substr(start, pos - start));
      if (!mention.empty() && lower_ascii(mention) != "none" && !type.empty())
        out.push_back(type + "\t" + mention);
      start = pos + 1;
    }
  }
  return out;
}

json parse_pair_list(const std::string& text) {
  json out = json::array();
  for (const auto& line : split_lines(text)) {
    size_t bar = line.find('|');
    if (bar == std::string::npos) continue;
    std::string a = trim_ascii(line.substr(0, bar)), b = trim_ascii(line.substr(bar + 1));
    if (!a.empty() && !b.empty()) out.push_back(a + "\t" + b);
  }
  return out;
}

std::vector<std::string> string_list(const json& v) {
  std::vector<std::string> out;
  if (v.is_array())
    for (const auto& x : v) out.push_back(as_text(x));
  return out;
}

}  // namespace

const char* scorer_name(Scorer s) {
  for (const auto& [v, n] : kScorers)
    if (v == s) return n;
  return "?";
}

const char* parser_name(AnswerParser p) {
  for (const auto& [v, n] : kParsers)
    if (v == p) return n;
  return "none";
}

fs::path default_share_dir() {
#ifdef MING_SHARE_DIR
  return MING_SHARE_DIR;
#else
  return "share";
#endif
}

std::vector<std::string> template_fields(const std::string& tmpl) {
  std::vector<std::string> fields;
  for (size_t i = 0; i < tmpl.size(); ++i) {
    char c = tmpl[i];
    if (c == '{') {
      if (i + 1 < tmpl.size() && tmpl[i + 1] == '{') {
        ++i;
        continue;
      }
      size_t close = tmpl.find('}', i);
      if (close == std::string::npos)
        fail_usage("template: '{{' at offset {} is never closed (use {{{{ for a literal brace)", i);
      std::string name = tmpl.substr(i + 1, close - i - 1);
      static const std::regex name_re(R"([A-Za-z_][A-Za-z0-9_]*)");
      if (!std::regex_match(name, name_re))
        fail_usage("template: '{{{}}}' is not a field name (letters, digits, _)", name);
      if (std::find(fields.begin(), fields.end(), name) == fields.end()) fields.push_back(name);
      i = close;
    } else if (c == '}') {
      if (i + 1 < tmpl.size() && tmpl[i + 1] == '}') {
        ++i;
        continue;
      }
      fail_usage("template: lone '}}' at offset {} (use }}}} for a literal brace)", i);
    }
  }
  return fields;
}

std::string render_template(const std::string& tmpl, const json& record) {
  template_fields(tmpl);  // syntax check
  std::string out;
  for (size_t i = 0; i < tmpl.size(); ++i) {
    char c = tmpl[i];
    if ((c == '{' || c == '}') && i + 1 < tmpl.size() && tmpl[i + 1] == c) {
      out += c;
      ++i;
      continue;
    }
    if (c != '{') {
      out += c;
      continue;
    }
    size_t close = tmpl.find('}', i);
    std::string name = tmpl.substr(i + 1, close - i - 1);
    if (!record.is_object() || !record.contains(name))
      fail_usage("template field '{}' is not in the record", name);
    const json& v = record[name];
    if (v.is_object()) {
      std::string lines;
      for (const auto& [k, x] : v.items())
        lines += (lines.empty() ? "" : "\n") + k + ". " + as_text(x);
      out += lines;
    } else {
      out += as_text(v);
    }
    i = close;
  }
  return out;
}

std::vector<std::string> list_tasks(const fs::path& share_dir) {
  fs::path dir = (share_dir.empty() ? default_share_dir() : share_dir) / "tasks";
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".yaml") names.push_back(e.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

TaskSpec load_task_spec(const std::string& path_or_name, const fs::path& share_dir) {
  fs::path path = path_or_name;
  if (!fs::is_regular_file(path)) {
    bool bare = path_or_name.find('/') == std::string::npos && path.extension() != ".yaml";
    fs::path candidate =
        (share_dir.empty() ? default_share_dir() : share_dir) / "tasks" / (path_or_name + ".yaml");
    if (!bare || !fs::is_regular_file(candidate))
      fail_usage("task '{}': no such file{} (known tasks: {})", path_or_name,
                 bare ? " and no " + candidate.string() : "", join(list_tasks(share_dir), ", "));
    path = candidate;
  }
  YAML::Node root;
  try {
    root = YAML::LoadFile(path.string());
  } catch (const YAML::BadFile&) {
    fail_usage("{}: cannot read the task file", path.string());
  } catch (const YAML::Exception& e) {
    fail_usage("{}:{}:{}: YAML syntax error: {}", path.string(), e.mark.line + 1, e.mark.column + 1,
               e.msg);
  }
  if (!root.IsMap()) fail_usage("{}: a task file must be a YAML mapping", path.string());

  Problems p{path, {}};
  TaskSpec spec;
  spec.source = path;
  check_keys(
      p, root, "",
      {"name", "language", "description", "data", "format", "split", "id_field", "categories",
       "system", "prompt", "gold", "scorer", "choices", "answer", "metrics", "generation"});
  if (read_string(p, root, "name", "name", &spec.name, true) &&
      !std::regex_match(spec.name, std::regex(R"([a-z0-9][a-z0-9._-]*)")))
    p.add(root["name"].Mark(), "name",
          fmt::format("'{}' must match [a-z0-9][a-z0-9._-]*", spec.name));
  if (read_string(p, root, "language", "language", &spec.language, true) && spec.language != "en" &&
      spec.language != "zh")
    p.add(root["language"].Mark(), "language", fmt::format("'{}' is not en or zh", spec.language));
  read_string(p, root, "description", "description", &spec.description, false);
  if (read_string(p, root, "data", "data", &spec.data, true) &&
      spec.data.find("{suite}") == std::string::npos &&
      spec.data.find("{data}") == std::string::npos)
    p.add(root["data"].Mark(), "data",
          "must start from {suite} or {data} (e.g. {suite}/medqa/{split}.jsonl)");
  if (read_string(p, root, "format", "format", &spec.format, false) && spec.format != "jsonl" &&
      spec.format != "csv")
    p.add(root["format"].Mark(), "format", fmt::format("'{}' is not jsonl or csv", spec.format));
  if (spec.format.empty()) {
    const std::string lower = lower_ascii(spec.data);
    spec.format =
        lower.size() >= 4 && lower.compare(lower.size() - 4, 4, ".csv") == 0 ? "csv" : "jsonl";
  }
  read_string(p, root, "split", "split", &spec.split, false);
  read_string(p, root, "id_field", "id_field", &spec.id_field, false);
  read_string_list(p, root, "categories", "categories", &spec.categories);
  read_string(p, root, "system", "system", &spec.system, false);
  if (read_string(p, root, "prompt", "prompt", &spec.prompt, true)) {
    try {
      template_fields(spec.prompt);
    } catch (const UsageError& e) {
      p.add(root["prompt"].Mark(), "prompt", e.what());
    }
  }
  read_string(p, root, "gold", "gold", &spec.gold, true);

  std::string scorer;
  bool scorer_ok = false;  // later checks that depend on the scorer only run when it is valid
  if (read_string(p, root, "scorer", "scorer", &scorer, true)) {
    for (const auto& [v, n] : kScorers)
      if (scorer == n) spec.scorer = v, scorer_ok = true;
    if (!scorer_ok)
      p.add(root["scorer"].Mark(), "scorer",
            fmt::format("unknown scorer '{}' (known: {})", scorer, joined_names(kScorers)));
  }

  if (YAML::Node ch = root["choices"]) {
    if (!ch.IsMap()) {
      p.add(ch.Mark(), "choices", "expected a mapping with field or values");
    } else {
      check_keys(p, ch, "choices", {"field", "values", "continuation"});
      read_string(p, ch, "field", "choices.field", &spec.choices_field, false);
      read_string_list(p, ch, "values", "choices.values", &spec.choice_values);
      std::string cont = "letter";
      if (read_string(p, ch, "continuation", "choices.continuation", &cont, false) &&
          cont != "letter" && cont != "text")
        p.add(ch["continuation"].Mark(), "choices.continuation",
              fmt::format("'{}' is not letter or text", cont));
      spec.continuation_is_letter = cont == "letter";
      if (spec.choices_field.empty() == spec.choice_values.empty())
        p.add(ch.Mark(), "choices",
              "give exactly one of field (record options) or values (fixed list)");
    }
    if (scorer_ok && spec.scorer != Scorer::loglik_choice)
      p.add(ch.Mark(), "choices", "only used by scorer loglik_choice");
  } else if (scorer_ok && spec.scorer == Scorer::loglik_choice) {
    p.add(root.Mark(), "choices",
          "missing; scorer loglik_choice needs choices.field or choices.values");
  }

  if (YAML::Node ans = root["answer"]) {
    if (!ans.IsMap()) {
      p.add(ans.Mark(), "answer", "expected a mapping with parser: ...");
    } else {
      check_keys(p, ans, "answer",
                 {"parser", "pattern", "labels", "labels_field", "options_field"});
      std::string parser;
      if (read_string(p, ans, "parser", "answer.parser", &parser, true)) {
        bool found = false;
        for (const auto& [v, n] : kParsers)
          if (parser == n) spec.parser = v, found = true;
        if (!found)
          p.add(ans["parser"].Mark(), "answer.parser",
                fmt::format("unknown parser '{}' (known: {})", parser, joined_names(kParsers)));
      }
      if (read_string(p, ans, "pattern", "answer.pattern", &spec.pattern, false)) {
        try {
          std::regex re(spec.pattern);
        } catch (const std::regex_error& e) {
          p.add(ans["pattern"].Mark(), "answer.pattern",
                fmt::format("invalid regex: {}", e.what()));
        }
      }
      read_string_list(p, ans, "labels", "answer.labels", &spec.labels);
      read_string(p, ans, "labels_field", "answer.labels_field", &spec.labels_field, false);
      read_string(p, ans, "options_field", "answer.options_field", &spec.options_field, false);
      if (spec.parser == AnswerParser::regex && spec.pattern.empty())
        p.add(ans.Mark(), "answer.pattern", "parser regex needs a pattern");
      if (spec.parser == AnswerParser::label && spec.labels.empty() && spec.labels_field.empty())
        p.add(ans.Mark(), "answer.labels", "parser label needs labels or labels_field");
    }
    if (scorer_ok && spec.scorer != Scorer::generate)
      p.add(ans.Mark(), "answer", "only used by scorer generate");
  } else if (scorer_ok && spec.scorer == Scorer::generate) {
    p.add(root.Mark(), "answer.parser", "missing; scorer generate needs answer.parser");
  }

  if (YAML::Node ms = root["metrics"]; !ms) {
    p.add(root.Mark(), "metrics", "missing required field");
  } else if (!ms.IsSequence() || ms.size() == 0) {
    p.add(ms.Mark(), "metrics", "expected a non-empty list of metric names");
  } else {
    for (const auto& item : ms) {
      Metric m;
      std::string name = item.IsScalar() ? item.as<std::string>() : "";
      if (!parse_metric(name, &m)) {
        p.add(item.Mark(), "metrics",
              fmt::format("unknown metric '{}' (known: {})", name, join(metric_names(), ", ")));
        continue;
      }
      spec.metrics.push_back(m);
      if (!scorer_ok) continue;
      const bool ppl_scorer = spec.scorer == Scorer::perplexity;
      if ((m == Metric::perplexity) != ppl_scorer)
        p.add(item.Mark(), "metrics",
              fmt::format("metric '{}' cannot be used with scorer {}", name, scorer));
      if (spec.scorer == Scorer::loglik_choice && m != Metric::accuracy && m != Metric::f1_micro &&
          m != Metric::f1_macro && m != Metric::f1_weighted)
        p.add(item.Mark(), "metrics",
              fmt::format("metric '{}' needs generated text; loglik_choice gives accuracy and f1_*",
                          name));
      if (m == Metric::tuple_f1 && spec.parser != AnswerParser::entity_list &&
          spec.parser != AnswerParser::pair_list)
        p.add(item.Mark(), "metrics", "tuple_f1 needs answer.parser entity_list or pair_list");
      if ((m == Metric::promptcblue) != (spec.parser == AnswerParser::promptcblue) &&
          spec.scorer == Scorer::generate)
        p.add(item.Mark(), "metrics",
              "metric promptcblue and answer.parser promptcblue go together");
    }
  }

  if (YAML::Node gen = root["generation"]) {
    if (!gen.IsMap()) {
      p.add(gen.Mark(), "generation", "expected a mapping");
    } else {
      check_keys(p, gen, "generation", {"max_new_tokens", "stop", "stop_tokens"});
      if (YAML::Node n = gen["max_new_tokens"]) {
        try {
          spec.max_new_tokens = n.as<int>();
          if (spec.max_new_tokens < 1) p.add(n.Mark(), "generation.max_new_tokens", "must be >= 1");
        } catch (const YAML::Exception&) {
          p.add(n.Mark(), "generation.max_new_tokens", "expected an integer");
        }
      }
      read_string_list(p, gen, "stop", "generation.stop", &spec.stop);
      read_string_list(p, gen, "stop_tokens", "generation.stop_tokens", &spec.stop_tokens);
    }
  }

  if (!p.lines.empty()) {
    std::string msg = p.lines.size() == 1 ? p.lines[0]
                                          : fmt::format("{} problems in task file:\n  {}",
                                                        p.lines.size(), join(p.lines, "\n  "));
    throw UsageError(msg);
  }
  return spec;
}

fs::path task_data_path(const TaskSpec& spec, const fs::path& suite_dir, const std::string& split,
                        const fs::path& data_dir) {
  std::string s = spec.data;
  auto sub = [&s](const std::string& key, const std::string& value) {
    for (size_t pos = s.find(key); pos != std::string::npos; pos = s.find(key, pos + value.size()))
      s.replace(pos, key.size(), value);
  };
  sub("{suite}", suite_dir.string());
  if (s.find("{data}") != std::string::npos) {
    fs::path data = data_dir;
    if (data.empty())
      if (const char* env = std::getenv("MING_DATA"); env && *env) data = env;
    if (data.empty())
      fail_usage(
          "task {}: its data ({}) is in the raw data folder: give --data DIR or set MING_DATA",
          spec.name, spec.data);
    sub("{data}", data.string());
  }
  sub("{split}", split.empty() ? spec.split : split);
  return s;
}

std::vector<std::pair<std::string, std::string>> record_options(const json& record,
                                                                const std::string& field) {
  std::vector<std::pair<std::string, std::string>> out;
  if (field.empty() || !record.is_object() || !record.contains(field)) return out;
  const json& v = record[field];
  if (v.is_object()) {
    for (const auto& [k, x] : v.items()) out.emplace_back(k, as_text(x));
    return out;
  }
  if (!v.is_string()) return out;
  // One option per line: a capital letter, then a separator (space, '.', '．', '、', ':', ')').
  static const std::regex line_re(
      R"(^\s*\(?([A-Z])\)?(?:\s*(?:\.|:|\)|\xEF\xBC\x8E|\xE3\x80\x81|\xEF\xBC\x9A|\xEF\xBC\x89))?\s*(.*?)\s*$)");
  for (const auto& line : split_lines(v.get<std::string>())) {
    if (trim_ascii(line).empty()) continue;
    std::smatch m;
    if (!std::regex_match(line, m, line_re)) return {};
    out.emplace_back(m[1].str(), m[2].str());
  }
  return out;
}

Choices record_choices(const TaskSpec& spec, const json& record) {
  if (spec.scorer != Scorer::loglik_choice)
    fail_usage("task {}: choices exist only for scorer loglik_choice", spec.name);
  Choices c;
  if (!spec.choices_field.empty()) {
    const auto options = record_options(record, spec.choices_field);
    if (options.empty())
      fail_usage("field '{}': expected options (an object of letters, or \"A ...\" lines)",
                 spec.choices_field);
    for (const auto& [k, v] : options) {
      c.keys.push_back(k);
      c.continuations.push_back(" " + (spec.continuation_is_letter ? k : v));
    }
  } else {
    for (const auto& v : spec.choice_values) {
      c.keys.push_back(v);
      c.continuations.push_back(" " + v);
    }
  }
  if (!record.contains(spec.gold)) fail_usage("field '{}': missing", spec.gold);
  if (spec.continuation_is_letter && !spec.choices_field.empty()) {
    c.gold_answer = canonical_letters(record[spec.gold], c.keys, spec.gold);
    auto it = std::find(c.keys.begin(), c.keys.end(), c.gold_answer);
    if (it == c.keys.end())
      it = std::find(c.keys.begin(), c.keys.end(), c.gold_answer.substr(0, 1));
    c.gold = static_cast<size_t>(it - c.keys.begin());
    return c;
  }
  const std::string gold = as_text(record[spec.gold]);
  auto it = std::find(c.keys.begin(), c.keys.end(), gold);
  if (it == c.keys.end()) {
    if (!spec.choices_field.empty())
      fail_usage("field '{}': answer '{}' is not among the options ({})", spec.gold, gold,
                 join(c.keys, ", "));
    fail_usage("field '{}': '{}' is not one of the choices ({})", spec.gold, gold,
               join(c.keys, ", "));
  }
  c.gold = static_cast<size_t>(it - c.keys.begin());
  c.gold_answer = spec.continuation_is_letter ? gold : c.continuations[c.gold].substr(1);
  return c;
}

namespace {

struct RawRecord {
  size_t line = 0;
  json data;
};

std::vector<RawRecord> read_raw_records(const TaskSpec& spec, const fs::path& path) {
  std::vector<RawRecord> out;
  if (spec.format == "csv") {
    for (auto& row : io::read_csv(path))
      out.push_back({static_cast<size_t>(row.line), std::move(row.fields)});
    return out;
  }
  io::for_each_jsonl(path, [&](const json& rec, int64_t line) {
    const size_t n = static_cast<size_t>(line);
    if (!rec.is_object()) fail_usage("{}:{}: expected a JSON object per line", path.string(), n);
    out.push_back({n, rec});
  });
  return out;
}

}  // namespace

std::vector<TaskRecord> load_task_records(const TaskSpec& spec, const fs::path& suite_dir,
                                          const std::string& split, const fs::path& data_dir) {
  const fs::path path = task_data_path(spec, suite_dir, split, data_dir);
  if (!fs::is_regular_file(path))
    fail_usage("task {}: cannot read {} (hint: {})", spec.name, path.string(),
               spec.data.find("{data}") != std::string::npos
                   ? "--data DIR names the folder of ../shared/data's layout"
                   : "run scripts/prepare-suite --out " + suite_dir.string());
  const std::vector<std::string> fields = template_fields(spec.prompt);
  const char* row_kind = spec.format == "csv" ? "column" : "field";
  std::vector<TaskRecord> records;
  std::set<std::string> ids;
  auto raw = read_raw_records(spec, path);
  for (size_t index = 0; index < raw.size(); ++index) {
    const size_t n = raw[index].line;
    json& rec = raw[index].data;
    auto where = [&](const std::string& field) {
      return fmt::format("{}:{}: {} '{}'", path.string(), n, row_kind, field);
    };
    std::string id = std::to_string(index);
    if (rec.contains(spec.id_field)) {
      const json& v = rec[spec.id_field];
      if (v.is_string())
        id = v.get<std::string>();
      else if (v.is_number_integer())
        id = v.dump();
      else
        fail_usage("{}: expected a string or integer id", where(spec.id_field));
    }
    if (!ids.insert(id).second) fail_usage("{}: duplicate id '{}'", where(spec.id_field), id);
    for (const auto& f : fields)
      if (!rec.contains(f)) fail_usage("{}: missing (the prompt uses {{{}}})", where(f), f);
    if (!rec.contains(spec.gold))
      fail_usage("{}: missing (the task's gold field)", where(spec.gold));
    for (const auto& f : spec.categories)
      if (!rec.contains(f)) fail_usage("{}: missing (a category of the task)", where(f));
    try {
      if (spec.scorer == Scorer::loglik_choice) record_choices(spec, rec);
      if (is_option_parser(spec.parser) && !spec.options_field.empty()) {
        auto keys = option_keys(rec, spec.options_field);
        if (keys.empty())
          fail_usage("{} '{}': expected options (an object of letters, or \"A ...\" lines)",
                     row_kind, spec.options_field);
        canonical_letters(rec[spec.gold], keys, spec.gold);
      }
      if (spec.parser == AnswerParser::label && !spec.labels_field.empty() &&
          !(rec.contains(spec.labels_field) && rec[spec.labels_field].is_array()))
        fail_usage("field '{}': expected a list of labels", spec.labels_field);
      if (spec.parser == AnswerParser::promptcblue) {
        if (!rec.contains("task_dataset") || !rec["task_dataset"].is_string())
          fail_usage("field 'task_dataset': missing (PromptCBLUE records need it)");
        if (!promptcblue::is_known(rec["task_dataset"].get<std::string>()))
          fail_usage("field 'task_dataset': unknown PromptCBLUE task '{}'",
                     rec["task_dataset"].get<std::string>());
      }
    } catch (const UsageError& e) {
      fail_usage("{}:{}: {}", path.string(), n, e.what());
    }
    records.push_back({std::move(id), n, index, std::move(rec)});
  }
  return records;
}

json parse_answer(const TaskSpec& spec, const std::string& generated, const json& record) {
  const std::string text = strip_unicode(generated);
  switch (spec.parser) {
    case AnswerParser::option_letter:
      return parse_option_letter(text, option_keys(record, spec.options_field));
    case AnswerParser::exam_cot:
      return parse_exam_cot(text, option_keys(record, spec.options_field));
    case AnswerParser::first_letter:
      return parse_first_letter(text, option_keys(record, spec.options_field));
    case AnswerParser::yes_no_maybe:
      return parse_yes_no_maybe(text);
    case AnswerParser::label:
      return parse_label(text, spec.labels_field.empty()
                                   ? spec.labels
                                   : string_list(record.value(spec.labels_field, json::array())));
    case AnswerParser::entity_list:
      return parse_entity_list(text);
    case AnswerParser::pair_list:
      return parse_pair_list(text);
    case AnswerParser::regex: {
      std::smatch m;
      std::regex re(spec.pattern);
      if (!std::regex_search(text, m, re)) return "";
      return m.size() > 1 ? m[1].str() : m[0].str();
    }
    case AnswerParser::text:
      return text;
    case AnswerParser::promptcblue:
      return promptcblue::parse_output(record.value("task_dataset", ""), text,
                                       record.value("answer_choices", json()));
    case AnswerParser::none:
      break;
  }
  return text;
}

json gold_answer(const TaskSpec& spec, const json& record) {
  if (!record.contains(spec.gold))
    fail_usage("task {}: record lacks gold field '{}'", spec.name, spec.gold);
  const json& g = record[spec.gold];
  if (const std::string field = letter_options_field(spec); !field.empty()) {
    const auto keys = option_keys(record, field);
    if (!keys.empty()) return canonical_letters(g, keys, spec.gold);
  }
  switch (spec.parser) {
    case AnswerParser::entity_list:
      return g.is_string() ? parse_entity_list(g.get<std::string>()) : g;
    case AnswerParser::pair_list:
      return g.is_string() ? parse_pair_list(g.get<std::string>()) : g;
    case AnswerParser::promptcblue:
      // The official structured answer when the record has it (dev_structured.json), else the
      // target text through the same post-processing as predictions.
      if (record.contains("answer") && !record["answer"].is_null()) return record["answer"];
      return promptcblue::parse_output(record.value("task_dataset", ""), as_text(g),
                                       record.value("answer_choices", json()));
    default:
      return as_text(g);
  }
}

ExampleStats score_example(const TaskSpec& spec, Metric metric, const json& pred,
                           const json& record) {
  const json gold = gold_answer(spec, record);
  switch (metric) {
    case Metric::accuracy:
      return example_correct(pred == gold);
    case Metric::exact_match:
      return example_exact_match(as_text(pred), as_text(gold));
    case Metric::f1_micro:
    case Metric::f1_macro:
    case Metric::f1_weighted:
      return example_label(as_text(pred), as_text(gold));
    case Metric::tuple_f1:
      return example_tuples(string_list(pred), string_list(gold));
    case Metric::rouge1:
    case Metric::rouge2:
    case Metric::rougeL: {
      int n = metric == Metric::rouge1 ? 1 : metric == Metric::rouge2 ? 2 : 0;
      return example_rouge(tokenize_for_metric(as_text(pred), spec.language),
                           tokenize_for_metric(as_text(gold), spec.language), n);
    }
    case Metric::bleu4:
      return example_bleu(tokenize_for_metric(as_text(pred), spec.language),
                          tokenize_for_metric(as_text(gold), spec.language));
    case Metric::promptcblue:
      return promptcblue::example_stats(record.value("task_dataset", ""), pred, gold);
    case Metric::perplexity:
      break;
  }
  fail_usage(
      "task {}: perplexity comes from the model's token log-likelihoods (example_nll), "
      "not from parsed text",
      spec.name);
}

}  // namespace ming::eval
