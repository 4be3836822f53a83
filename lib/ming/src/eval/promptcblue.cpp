#include "ming/eval/promptcblue.h"

#include <algorithm>
#include <set>

#include <utf8proc.h>

#include "ming/core/error.h"

namespace ming::eval::promptcblue {

namespace {

using nlohmann::json;

// Python's str.split(sep): every occurrence splits, empty pieces kept.
std::vector<std::string> split(const std::string& s, const std::string& sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t pos = s.find(sep, start);
    if (pos == std::string::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, pos - start));
    start = pos + sep.size();
  }
}

// Python's str.replace(a, b): all non-overlapping occurrences, left to right.
std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  std::string out;
  size_t start = 0;
  while (true) {
    size_t pos = s.find(from, start);
    if (pos == std::string::npos) break;
    out.append(s, start, pos - start);
    out += to;
    start = pos + from.size();
  }
  out.append(s, start, std::string::npos);
  return out;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// Python's s[n:] on code points (not bytes).
std::string drop_code_points(const std::string& s, size_t n) {
  size_t i = 0;
  while (n > 0 && i < s.size()) {
    utf8proc_int32_t cp = 0;
    auto len = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data()) + i,
                                static_cast<utf8proc_ssize_t>(s.size() - i), &cp);
    i += len > 0 ? static_cast<size_t>(len) : 1;
    --n;
  }
  return s.substr(i);
}

std::vector<std::string> tail(const std::vector<std::string>& v) {
  return v.size() <= 1 ? std::vector<std::string>{}
                       : std::vector<std::string>(v.begin() + 1, v.end());
}

std::vector<std::string> strings_of(const json& choices) {
  std::vector<std::string> out;
  if (choices.is_array())
    for (const auto& c : choices)
      if (c.is_string()) out.push_back(c.get<std::string>());
  return out;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

const std::string kFullComma = "，";
const std::string kFullColon = "：";

json parse_ner(const std::string& text, const json& answer_choices) {
  json entities = json::array();
  auto lines = split(text, "\n");
  for (const auto& choice : strings_of(answer_choices)) {
    for (const auto& piece : lines) {
      if (!starts_with(piece, choice + "实体")) continue;
      for (const auto& m :
           split(replace_all(piece, choice + "实体" + kFullColon, ""), kFullComma)) {
        std::string mention = strip_unicode(m);
        if (!mention.empty()) entities.push_back({{"entity", mention}, {"type", choice}});
      }
    }
  }
  return entities;
}

json parse_cmeie(const std::string& text) {
  json spos = json::array();
  for (std::string line : split(text, "\n")) {
    std::string predicate = strip_unicode(drop_code_points(split(line, "关系的头尾实体对")[0], 2));
    line = replace_all(line, "具有" + predicate + "关系的头尾实体对如下" + kFullColon, "");
    for (const auto& spo : split(line, "。")) {
      auto parts = split(spo, "，尾实体为");
      if (parts.size() < 2) continue;
      std::string head = strip_unicode(replace_all(parts[0], "头实体为", ""));
      std::string tail_ = strip_unicode(replace_all(parts[1], "尾实体为", ""));
      spos.push_back({{"predicate", predicate}, {"subject", head}, {"object", tail_}});
    }
  }
  return spos;
}

json parse_cdn(const std::string& text, const json& answer_choices) {
  auto lines = split(text, "\n");
  auto choices = strings_of(answer_choices);
  std::set<std::string> picked;
  for (const auto& a : split(lines.back(), kFullComma)) {
    std::string w = strip_unicode(a);
    if (!w.empty() && contains(choices, w)) picked.insert(w);
  }
  json out = json::array();
  for (const auto& w : picked) out.push_back({{"entity", w}, {"type", "normalization"}});
  return out;
}

json parse_cdee(const std::string& text) {
  static const std::vector<std::string> keys = {"主体词", "发生状态", "描述词", "解剖部位"};
  json events = json::array();
  for (const auto& ans : tail(split(text, "\n"))) {
    json event = json::object();
    for (std::string attr : split(ans, "；")) {
      // The reference rewrites attr inside the key loop; later keys see the rewritten value.
      for (const auto& key : keys) {
        if (!starts_with(attr, key + kFullColon)) continue;
        attr = strip_unicode(replace_all(attr, key + kFullColon, ""));
        if (key == "描述词" || key == "解剖部位") {
          json values = json::array();
          for (const auto& v : split(attr, kFullComma)) {
            std::string w = strip_unicode(v);
            if (!w.empty()) values.push_back(w);
          }
          event[key] = values;
        } else {
          event[key] = attr;
        }
      }
    }
    for (const auto& key : keys)
      if (!event.contains(key))
        event[key] = (key == "描述词" || key == "解剖部位") ? json::array() : json("");
    events.push_back(event);
  }
  return events;
}

json parse_attr_cls(const std::string& text, const json& answer_choices,
                    const std::string& fallback) {
  auto choices = strings_of(answer_choices);
  json out = json::array();
  for (const auto& ans : tail(split(text, "\n"))) {
    auto parts = split(ans, kFullColon);
    if (parts.size() != 2) continue;
    std::string conclusion = parts[1];
    if (!contains(choices, conclusion)) conclusion = fallback;
    out.push_back({{"entity", strip_unicode(parts[0])}, {"attr", conclusion}});
  }
  return out;
}

json parse_mrg(const std::string& text) {
  static const std::vector<std::string> keys = {"主诉：",   "现病史：", "辅助检查：",
                                                "既往史：", "诊断：",   "建议："};
  json out = json::object();
  auto lines = tail(split(strip_unicode(text), "\n"));
  for (const auto& key : keys) {
    for (const auto& line : lines) {
      if (!starts_with(line, key)) continue;
      out[key.substr(0, key.size() - kFullColon.size())] =
          strip_unicode(split(strip_unicode(line), key).back());
    }
  }
  return out;
}

// The label an empty prediction is replaced with: list_labels[0] in evaluate.py.
std::string default_label(const std::string& task) {
  if (task == "CHIP-STS") return "是的";
  if (task == "KUAKE-IR") return "相关";
  if (task == "KUAKE-QTR") return "完全不匹配或者没有参考价值";
  if (task == "KUAKE-QQR") return "完全一致";
  return "非上述类型";  // CHIP-CTC, KUAKE-QIC, IMCS-V2-DAC
}

// One extracted dict as a comparable tuple: its values ordered by key, like the reference's
// tuple(json.dumps(inst[k]) for k in sorted(inst)). Keys themselves are not part of it.
std::string tuple_key(const json& inst, const std::string& task) {
  if (!inst.is_object())
    fail_usage("PromptCBLUE {}: expected an object per extracted item, got {}", task, inst.dump());
  json values = json::array();
  for (const auto& [k, v] : inst.items()) values.push_back(v);  // nlohmann orders keys by bytes
  return values.dump();
}

std::vector<std::string> nlg_tokens(const std::string& text) {
  auto toks = tokenize_for_metric(strip_unicode(text), "zh");
  if (toks.empty()) toks = {"无", "。"};
  return toks;
}

}  // namespace

const std::vector<std::string>& task_datasets() {
  static const std::vector<std::string> names = {
      "CMeEE-V2",   "CMeIE",       "CHIP-CDN",    "CHIP-CDEE", "IMCS-V2-NER", "CHIP-MDCFNPC",
      "IMCS-V2-SR", "IMCS-V2-DAC", "IMCS-V2-MRG", "CHIP-CTC",  "CHIP-STS",    "KUAKE-IR",
      "KUAKE-QIC",  "KUAKE-QQR",   "KUAKE-QTR",   "MedDG"};
  return names;
}

bool is_known(const std::string& t) {
  return t == "CMeIE-V2" || contains(task_datasets(), t);
}

Metric task_metric(const std::string& t) {
  if (t == "CMeEE-V2" || t == "CMeIE" || t == "CMeIE-V2" || t == "CHIP-CDN" || t == "CHIP-CDEE" ||
      t == "IMCS-V2-NER" || t == "CHIP-MDCFNPC" || t == "IMCS-V2-SR")
    return Metric::tuple_f1;
  if (t == "CHIP-STS" || t == "KUAKE-IR" || t == "KUAKE-QTR" || t == "KUAKE-QQR")
    return Metric::f1_weighted;
  if (t == "CHIP-CTC" || t == "KUAKE-QIC" || t == "IMCS-V2-DAC") return Metric::f1_macro;
  if (t == "MedDG" || t == "IMCS-V2-MRG") return Metric::rougeL;
  fail_usage("unknown PromptCBLUE task_dataset '{}' (known: CMeEE-V2, CMeIE, CHIP-CDN, ...)", t);
}

json parse_output(const std::string& t, const std::string& text, const json& answer_choices) {
  if (t == "CMeEE-V2" || t == "IMCS-V2-NER") return parse_ner(text, answer_choices);
  if (t == "CMeIE" || t == "CMeIE-V2") return parse_cmeie(text);
  if (t == "CHIP-CDN") return parse_cdn(text, answer_choices);
  if (t == "CHIP-CDEE") return parse_cdee(text);
  if (t == "CHIP-MDCFNPC") return parse_attr_cls(text, answer_choices, "不标注");
  if (t == "IMCS-V2-SR")
    return parse_attr_cls(text, answer_choices, "无法根据上下文确定病人是否患有该症状");
  if (t == "IMCS-V2-MRG") return parse_mrg(text);
  if (t == "CHIP-STS") {
    std::string a = strip_unicode(text);
    if (a == "相同") return "是的";
    if (a == "不同") return "不是";
    return a;
  }
  task_metric(t);              // throws for unknown names
  return strip_unicode(text);  // the other classification tasks and MedDG
}

ExampleStats example_stats(const std::string& t, const json& pred, const json& gold) {
  const Metric m = task_metric(t);
  ExampleStats s;
  switch (m) {
    case Metric::tuple_f1: {
      if (!pred.is_array() || !gold.is_array())
        fail_usage("PromptCBLUE {}: expected lists of extracted items, got {} and {}", t,
                   pred.type_name(), gold.type_name());
      std::vector<std::string> p, g;
      for (const auto& x : pred) p.push_back(tuple_key(x, t));
      for (const auto& x : gold) g.push_back(tuple_key(x, t));
      s = example_tuples(p, g);
      break;
    }
    case Metric::f1_weighted:
    case Metric::f1_macro: {
      if (!pred.is_string() || !gold.is_string())
        fail_usage("PromptCBLUE {}: expected label strings, got {} and {}", t, pred.type_name(),
                   gold.type_name());
      std::string p = pred.get<std::string>();
      if (p.empty()) p = default_label(t);
      s = example_label(p, gold.get<std::string>());
      break;
    }
    default: {  // rougeL
      if (t == "IMCS-V2-MRG") {
        if (!pred.is_object() || !gold.is_object())
          fail_usage("PromptCBLUE {}: expected report sections (objects), got {} and {}", t,
                     pred.type_name(), gold.type_name());
        // One ROUGE-L per gold section; the task mean runs over sections (count = sections).
        s.value = 0;
        s.count = 0;
        for (const auto& [key, g] : gold.items()) {
          std::string p =
              pred.contains(key) && pred[key].is_string() ? pred[key].get<std::string>() : "";
          s.value +=
              rouge_l_f(nlg_tokens(p), nlg_tokens(g.is_string() ? g.get<std::string>() : ""));
          s.count += 1;
        }
      } else {
        if (!pred.is_string() || !gold.is_string())
          fail_usage("PromptCBLUE {}: expected strings, got {} and {}", t, pred.type_name(),
                     gold.type_name());
        s.value =
            rouge_l_f(nlg_tokens(pred.get<std::string>()), nlg_tokens(gold.get<std::string>()));
      }
    }
  }
  s.group = t == "CMeIE-V2" ? "CMeIE" : t;
  s.group_metric = m;
  return s;
}

Report score(const std::vector<Example>& examples) {
  Report r;
  for (const auto& ex : examples) {
    json pred = parse_output(ex.task_dataset, ex.generated, ex.answer_choices);
    r.rows.push_back(example_stats(ex.task_dataset, pred, ex.gold));
  }
  std::map<std::string, std::vector<size_t>> groups;
  for (size_t i = 0; i < r.rows.size(); ++i) groups[r.rows[i].group].push_back(i);
  for (const auto& [g, idx] : groups)
    r.per_task[g] = aggregate(r.rows[idx[0]].group_metric, r.rows, idx);
  for (const auto& t : task_datasets())
    if (!groups.count(t)) r.missing.push_back(t);
  r.mean = r.rows.empty() ? 0.0 : aggregate(Metric::promptcblue, r.rows);
  return r;
}

}  // namespace ming::eval::promptcblue
