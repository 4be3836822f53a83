#include "ming/data/reader.h"

#include <cctype>
#include <string_view>

#include "ming/core/error.h"
#include "ming/core/log.h"
#include "ming/io/files.h"
#include "ming/io/json.h"

namespace ming::data {

namespace fs = std::filesystem;
using io::Json;
using text::ChatMessage;
using text::Role;

namespace {

// A record that cannot be used; the message is the reason, without the location.
struct BadRecord {
  std::string reason;
};

template <typename... Args>
[[noreturn]] void bad(fmt::format_string<Args...> f, Args&&... args) {
  throw BadRecord{fmt::format(f, std::forward<Args>(args)...)};
}

const Json& require(const Json& record, const char* key) {
  auto it = record.find(key);
  if (it == record.end()) bad("missing field '{}'", key);
  return *it;
}

std::string require_string(const Json& record, const char* key) {
  const Json& v = require(record, key);
  if (!v.is_string()) bad("field '{}' is {}, expected a string", key, v.type_name());
  return v.get<std::string>();
}

// Optional string field: absent or null -> "".
std::string optional_string(const Json& record, const char* key) {
  auto it = record.find(key);
  if (it == record.end() || it->is_null()) return "";
  if (!it->is_string()) bad("field '{}' is {}, expected a string", key, it->type_name());
  return it->get<std::string>();
}

// The first of `keys` present in `turn`.
const Json* find_any(const Json& turn, std::initializer_list<const char*> keys) {
  for (const char* k : keys) {
    auto it = turn.find(k);
    if (it != turn.end()) return &*it;
  }
  return nullptr;
}

std::vector<ChatMessage> read_turns(const Json& record, const char* list_key) {
  const Json& turns = require(record, list_key);
  if (!turns.is_array())
    bad("field '{}' is {}, expected a list of turns", list_key, turns.type_name());
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < turns.size(); ++i) {
    const Json& turn = turns[i];
    if (!turn.is_object()) bad("{}[{}] is {}, expected an object", list_key, i, turn.type_name());
    const Json* role = find_any(turn, {"from", "role"});
    const Json* content = find_any(turn, {"value", "content"});
    if (!role) bad("{}[{}] has no 'from' or 'role'", list_key, i);
    if (!content) bad("{}[{}] has no 'value' or 'content'", list_key, i);
    if (!role->is_string())
      bad("{}[{}]: role is {}, expected a string", list_key, i, role->type_name());
    if (!content->is_string())
      bad("{}[{}]: content is {}, expected a string", list_key, i, content->type_name());
    auto parsed = text::parse_role(role->get<std::string>());
    if (!parsed)
      bad("{}[{}]: unknown role '{}' (expected system, user/human or assistant/gpt)", list_key, i,
          role->get<std::string>());
    out.push_back(ChatMessage{*parsed, content->get<std::string>()});
  }
  return out;
}

// Validation shared by every chat format.
std::vector<ChatMessage> finish_conversation(std::vector<ChatMessage> messages) {
  if (messages.empty()) bad("empty conversation");
  // Assistant turns before the first user turn have no prompt to answer; MING drops them.
  std::vector<ChatMessage> out;
  bool seen_user = false;
  for (auto& m : messages) {
    if (m.role == Role::user) seen_user = true;
    if (m.role == Role::assistant && !seen_user) continue;
    out.push_back(std::move(m));
  }
  bool any_assistant = false;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i].role != Role::assistant) continue;
    any_assistant = true;
    if (out[i].content.empty()) bad("assistant turn {} is empty", i);
  }
  if (!any_assistant) bad("no assistant turn after a user turn (nothing to train on)");
  return out;
}

Example parse_alpaca(const Json& record) {
  std::string instruction = require_string(record, "instruction");
  std::string input = optional_string(record, "input");
  std::string output = require_string(record, "output");
  std::string system = optional_string(record, "system");
  std::vector<ChatMessage> messages;
  if (!system.empty()) messages.push_back({Role::system, system});
  if (auto it = record.find("history"); it != record.end() && !it->is_null()) {
    if (!it->is_array())
      bad("field 'history' is {}, expected a list of [prompt, response]", it->type_name());
    for (size_t i = 0; i < it->size(); ++i) {
      const Json& pair = (*it)[i];
      if (!pair.is_array() || pair.size() != 2 || !pair[0].is_string() || !pair[1].is_string())
        bad("history[{}] is not a [prompt, response] pair of strings", i);
      messages.push_back({Role::user, pair[0].get<std::string>()});
      messages.push_back({Role::assistant, pair[1].get<std::string>()});
    }
  }
  std::string user = instruction;
  if (!input.empty()) user = instruction.empty() ? input : instruction + "\n" + input;
  if (user.empty()) bad("'instruction' and 'input' are both empty");
  messages.push_back({Role::user, user});
  messages.push_back({Role::assistant, output});
  Example ex;
  ex.messages = finish_conversation(std::move(messages));
  return ex;
}

// Where each top-level element of a JSON array starts, as [begin, end) byte ranges and the
// 1-based line of `begin`. Strings and escapes are honoured so brackets inside text do not count.
struct Element {
  size_t begin, end;
  int64_t line;
  bool complete;
};

std::vector<Element> split_json_array(std::string_view s, size_t open) {
  std::vector<Element> out;
  int64_t line = 1;
  for (size_t i = 0; i < open; ++i) line += s[i] == '\n';
  int depth = 0;
  bool in_string = false, escape = false;
  size_t begin = std::string_view::npos;
  int64_t begin_line = 0;
  auto close_element = [&](size_t end, bool complete) {
    if (begin == std::string_view::npos) return;
    size_t e = end;
    while (e > begin && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
    out.push_back({begin, e, begin_line, complete});
    begin = std::string_view::npos;
  };
  for (size_t i = open + 1; i < s.size(); ++i) {
    char c = s[i];
    if (c == '\n') ++line;
    if (in_string) {
      if (escape)
        escape = false;
      else if (c == '\\')
        escape = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (depth == 0) {
      if (c == ',') {
        close_element(i, true);
        continue;
      }
      if (c == ']') {
        close_element(i, true);
        return out;
      }
      if (begin == std::string_view::npos && !std::isspace(static_cast<unsigned char>(c))) {
        begin = i;
        begin_line = line;
      }
    }
    if (c == '"')
      in_string = true;
    else if (c == '{' || c == '[')
      ++depth;
    else if (c == '}' || c == ']')
      --depth;
  }
  // No closing bracket: the file was cut short.
  if (begin == std::string_view::npos) {
    out.push_back({s.size(), s.size(), line, false});
  } else {
    close_element(s.size(), false);
  }
  return out;
}

std::string format_bad_summary(const fs::path& path, int64_t n_bad, int64_t n_total,
                               const std::vector<BadExample>& first) {
  std::string msg = fmt::format("'{}': skipped {} of {} records that cannot be used", path.string(),
                                n_bad, n_total);
  for (const auto& b : first) msg += fmt::format("\n  {}: {}", b.origin, b.reason);
  if (n_bad > static_cast<int64_t>(first.size()))
    msg += fmt::format("\n  ... and {} more", n_bad - static_cast<int64_t>(first.size()));
  return msg;
}

}  // namespace

DataFormat detect_format(const Json& record, const std::string& where) {
  if (!record.is_object())
    fail_usage("{}: cannot detect the format: the record is not a JSON object", where);
  if (record.contains("conversations")) return DataFormat::sharegpt;
  if (record.contains("messages")) return DataFormat::messages;
  if (record.contains("instruction") && record.contains("output")) return DataFormat::alpaca;
  if (record.contains("input") && record.contains("target")) return DataFormat::promptcblue;
  if (record.contains("text")) return DataFormat::text;
  std::string keys;
  for (auto it = record.begin(); it != record.end(); ++it)
    keys += (keys.empty() ? "" : ", ") + it.key();
  fail_usage(
      "{}: cannot detect the dataset format from the keys [{}] (expected conversations, messages, "
      "instruction+output, input+target or text); set the dataset's format explicitly",
      where, keys);
}

Json canonical_record(const Json& record, DataFormat format, const RecordLayout& layout) {
  if (!record.is_object())
    throw UsageError(fmt::format("record is {}, expected a JSON object", record.type_name()));
  auto name = [](const std::string& given, const char* fallback) {
    return given.empty() ? std::string(fallback) : given;
  };
  const DatasetColumns& c = layout.columns;
  auto copy = [&](Json& out, const std::string& from, const char* to) {
    auto it = record.find(from);
    if (it != record.end()) out[to] = *it;
  };
  if (format == DataFormat::alpaca) {
    Json out = Json::object();
    copy(out, name(c.prompt, "instruction"), "instruction");
    copy(out, name(c.query, "input"), "input");
    copy(out, name(c.response, "output"), "output");
    copy(out, name(c.system, "system"), "system");
    copy(out, name(c.history, "history"), "history");
    return out;
  }
  if (format != DataFormat::sharegpt) return record;
  const DatasetTags& t = layout.tags;
  const std::string list_key = name(c.messages, "conversations");
  const std::string role_key = name(t.role_tag, "from"), content_key = name(t.content_tag, "value");
  const std::string user = name(t.user_tag, "human"), assistant = name(t.assistant_tag, "gpt"),
                    system = name(t.system_tag, "system"),
                    observation = name(t.observation_tag, "observation"),
                    function = name(t.function_tag, "function_call");
  auto turns = record.find(list_key);
  if (turns == record.end()) throw UsageError(fmt::format("missing field '{}'", list_key));
  if (!turns->is_array())
    throw UsageError(
        fmt::format("field '{}' is {}, expected a list of turns", list_key, turns->type_name()));
  Json conversation = Json::array();
  if (auto sys = record.find(name(c.system, "system"));
      sys != record.end() && sys->is_string() && !sys->get<std::string>().empty())
    conversation.push_back({{"from", "system"}, {"value", *sys}});
  for (size_t i = 0; i < turns->size(); ++i) {
    const Json& turn = (*turns)[i];
    if (!turn.is_object())
      throw UsageError(
          fmt::format("{}[{}] is {}, expected an object", list_key, i, turn.type_name()));
    // Untagged turns may also say {"role", "content"}, as ming's own sharegpt reader accepts.
    auto role = turn.find(role_key);
    if (role == turn.end() && t.role_tag.empty()) role = turn.find("role");
    auto content = turn.find(content_key);
    if (content == turn.end() && t.content_tag.empty()) content = turn.find("content");
    if (role == turn.end() || !role->is_string())
      throw UsageError(fmt::format("{}[{}] has no string '{}'", list_key, i, role_key));
    if (content == turn.end())
      throw UsageError(fmt::format("{}[{}] has no '{}'", list_key, i, content_key));
    const std::string r = role->get<std::string>();
    std::string mapped;
    if (r == user)
      mapped = "user";
    else if (r == assistant)
      mapped = "assistant";
    else if (r == system)
      mapped = "system";
    else if (r == observation || r == function)
      throw UsageError(
          fmt::format("{}[{}]: tool turn '{}' (ming trains plain conversations)", list_key, i, r));
    else if (text::parse_role(r))
      mapped = r;
    else
      throw UsageError(
          fmt::format("{}[{}]: unknown role '{}' (tags say user '{}', assistant '{}', "
                      "system '{}')",
                      list_key, i, r, user, assistant, system));
    conversation.push_back({{"from", mapped}, {"value", *content}});
  }
  return Json{{"conversations", std::move(conversation)}};
}

Example parse_record(const Json& record, DataFormat format) {
  try {
    if (!record.is_object()) bad("record is {}, expected a JSON object", record.type_name());
    Example ex;
    switch (format) {
      case DataFormat::sharegpt:
        ex.messages = finish_conversation(read_turns(record, "conversations"));
        return ex;
      case DataFormat::messages:
        ex.messages = finish_conversation(read_turns(record, "messages"));
        return ex;
      case DataFormat::alpaca:
        return parse_alpaca(record);
      case DataFormat::promptcblue: {
        std::string input = require_string(record, "input");
        std::string target = require_string(record, "target");
        if (input.empty()) bad("field 'input' is empty");
        ex.messages = finish_conversation({{Role::user, input}, {Role::assistant, target}});
        return ex;
      }
      case DataFormat::text:
        ex.text = require_string(record, "text");
        if (ex.text.empty()) bad("field 'text' is empty");
        ex.is_text = true;
        return ex;
      case DataFormat::auto_detect:
        break;
    }
    fail("parse_record: the format must be resolved before parsing");
  } catch (const BadRecord& b) {
    throw UsageError(b.reason);
  }
}

ReadResult read_examples(const fs::path& path, DataFormat format, BadExamplePolicy policy,
                         const RecordLayout* layout) {
  if (!fs::exists(path)) fail_usage("dataset '{}' does not exist", path.string());
  // Mapped, not read: a record is only copied once it is known to be of a sane size.
  const io::MappedFile content(path);
  // A UTF-8 byte order mark, as some Windows tools write it, is not part of the first record.
  std::string_view s = content.view();
  if (s.size() >= 3 && s.substr(0, 3) == "\xEF\xBB\xBF") s.remove_prefix(3);

  ReadResult result;
  result.format = format;
  int64_t n_total = 0;
  auto add_bad = [&](int64_t line, const std::string& reason) {
    std::string origin = fmt::format("{}:{}", path.string(), line);
    if (policy == BadExamplePolicy::stop) fail_usage("{}: {}", origin, reason);
    ++result.n_bad;
    if (static_cast<int64_t>(result.first_bad.size()) < kMaxReportedBad)
      result.first_bad.push_back({origin, reason});
  };

  std::string ext = path.extension().string();
  if (ext == ".txt") {
    if (format != DataFormat::text && format != DataFormat::auto_detect)
      fail_usage("dataset '{}': a .txt file can only be read as format text, not {}", path.string(),
                 data_format_name(format));
    result.format = DataFormat::text;
    if (s.empty()) fail_usage("dataset '{}' is empty", path.string());
    Example ex;
    ex.text = std::string(s);
    ex.is_text = true;
    ex.origin = fmt::format("{}:1", path.string());
    result.examples.push_back(std::move(ex));
    return result;
  }

  // One record (already split out of the file) -> an example or a bad-record report.
  auto take = [&](std::string_view text, int64_t line) {
    ++n_total;
    if (text.size() > io::kMaxJsonLineBytes) {
      add_bad(line,
              fmt::format("a record longer than {} MiB (the limit)", io::kMaxJsonLineBytes >> 20));
      return;
    }
    Json record;
    try {
      record = io::parse_json(text, "record");
    } catch (const UsageError& e) {
      add_bad(line, e.what());
      return;
    }
    std::string origin = fmt::format("{}:{}", path.string(), line);
    if (result.format == DataFormat::auto_detect) result.format = detect_format(record, origin);
    try {
      Example ex = parse_record(layout ? canonical_record(record, result.format, *layout) : record,
                                result.format);
      ex.origin = std::move(origin);
      result.examples.push_back(std::move(ex));
    } catch (const UsageError& e) {
      add_bad(line, e.what());
    }
  };

  size_t first = s.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && s[first] == '[') {
    for (const Element& el : split_json_array(s, first)) {
      if (!el.complete) {
        add_bad(el.line, "unterminated JSON array (the file ends before its closing ']')");
        continue;
      }
      if (el.end > el.begin) take(s.substr(el.begin, el.end - el.begin), el.line);
    }
  } else {
    int64_t line = 0;
    size_t pos = 0;
    while (pos < s.size()) {
      // The end of a line is looked for no further than the record limit, so that a huge line
      // is refused at once (under BadExamplePolicy::stop) rather than after scanning all of it.
      size_t nl = s.substr(pos, io::kMaxJsonLineBytes + 1).find('\n');
      if (nl == std::string_view::npos && s.size() - pos > io::kMaxJsonLineBytes) {
        take(s.substr(pos, io::kMaxJsonLineBytes + 1), ++line);  // refused as too long
        nl = s.find('\n', pos);
        pos = nl == std::string_view::npos ? s.size() : nl + 1;
        continue;
      }
      if (nl != std::string_view::npos) nl += pos;
      std::string_view text =
          s.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
      pos = nl == std::string_view::npos ? s.size() : nl + 1;
      ++line;
      if (text.find_first_not_of(" \t\r") == std::string_view::npos) continue;
      take(text, line);
    }
  }

  if (n_total == 0) fail_usage("dataset '{}' has no records", path.string());
  if (result.examples.empty())
    fail_usage("{}", format_bad_summary(path, result.n_bad, n_total, result.first_bad) +
                         "\n(no usable record left; is the format right?)");
  if (result.n_bad > 0)
    log::warn("{}", format_bad_summary(path, result.n_bad, n_total, result.first_bad));
  return result;
}

}  // namespace ming::data
