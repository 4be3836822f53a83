// Chat templates rendered as segments. Each renderer reproduces the Hugging Face Jinja template of
// its family character for character (see the comments), split at the points training masks need.
#include "ming/io/json.h"
#include "ming/text/chat_template.h"

#include <fstream>

#include <nlohmann/json.hpp>

#include "ming/core/error.h"

namespace ming::text {
namespace fs = std::filesystem;

ChatTemplateKind parse_chat_template(const std::string& name) {
  if (name == "chatml" || name == "qwen") return ChatTemplateKind::chatml;
  if (name == "llama2" || name == "llama-2") return ChatTemplateKind::llama2;
  if (name == "llama3" || name == "llama-3") return ChatTemplateKind::llama3;
  if (name == "raw" || name == "plain" || name == "none") return ChatTemplateKind::raw;
  fail_usage("unknown chat template '{}' (expected chatml, llama2, llama3 or raw)", name);
}

std::string chat_template_name(ChatTemplateKind kind) {
  switch (kind) {
    case ChatTemplateKind::chatml:
      return "chatml";
    case ChatTemplateKind::llama2:
      return "llama2";
    case ChatTemplateKind::llama3:
      return "llama3";
    case ChatTemplateKind::raw:
      return "raw";
  }
  return "raw";
}

std::optional<Role> parse_role(const std::string& name) {
  if (name == "system") return Role::system;
  if (name == "user" || name == "human") return Role::user;
  if (name == "assistant" || name == "gpt") return Role::assistant;
  return std::nullopt;
}

namespace {

const char* role_name(Role role) {
  switch (role) {
    case Role::system:
      return "system";
    case Role::user:
      return "user";
    case Role::assistant:
      return "assistant";
  }
  return "user";
}

// Python's str.strip() on the whitespace that occurs in chat text (ASCII whitespace).
bool is_space(char c) {
  return c == ' ' || (c >= '\t' && c <= '\r');
}
std::string strip(const std::string& s, bool left = true, bool right = true) {
  size_t b = 0, e = s.size();
  if (left)
    while (b < e && is_space(s[b])) ++b;
  if (right)
    while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

class Builder {
 public:
  void add(std::string text, SegmentKind kind, Role role) {
    if (text.empty()) return;
    out.push_back({std::move(text), kind, role});
  }
  std::vector<Segment> out;
};

// Qwen's template: '<|im_start|>' + role + '\n' + content + '<|im_end|>' + '\n' per message;
// generation prompt '<|im_start|>assistant\n'.
std::vector<Segment> render_chatml(const std::vector<ChatMessage>& messages, bool generation) {
  Builder b;
  for (const auto& m : messages) {
    b.add("<|im_start|>", SegmentKind::marker, m.role);
    b.add(std::string(role_name(m.role)) + "\n", SegmentKind::header, m.role);
    b.add(m.content, SegmentKind::content, m.role);
    b.add("<|im_end|>", SegmentKind::marker, m.role);
    b.add("\n", SegmentKind::marker, m.role);
  }
  if (generation) {
    b.add("<|im_start|>", SegmentKind::marker, Role::assistant);
    b.add("assistant\n", SegmentKind::header, Role::assistant);
  }
  return b.out;
}

// Meta's Llama-2-chat template (tokenizer_config.json):
//   user:      bos + '[INST] ' + content.strip() + ' [/INST]'
//   assistant: ' ' + content.strip() + ' ' + eos
// with a leading system message folded into the first user turn as
// '<<SYS>>\n' + system + '\n<</SYS>>\n\n' + user (the whole then strip()ped). Roles must
// alternate user/assistant. HF's template has no generation prompt: it ends with ' [/INST]'.
std::vector<Segment> render_llama2(const std::vector<ChatMessage>& messages) {
  Builder b;
  size_t first = 0;
  std::optional<std::string> system;
  if (!messages.empty() && messages[0].role == Role::system) {
    system = messages[0].content;
    first = 1;
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const bool expect_user = (i - first) % 2 == 0;
    if (m.role == Role::system || (m.role == Role::user) != expect_user)
      fail_usage(
          "llama2 chat template: message {} has role '{}'; roles must alternate "
          "user/assistant after an optional leading system message",
          i, role_name(m.role));
    if (m.role == Role::user) {
      b.add("<s>", SegmentKind::marker, Role::user);
      b.add("[INST] ", SegmentKind::marker, Role::user);
      if (i == first && system) {
        // strip() of '<<SYS>>\n...' + content only trims the content's right end.
        b.add("<<SYS>>\n", SegmentKind::marker, Role::system);
        b.add(*system, SegmentKind::content, Role::system);
        b.add("\n<</SYS>>\n\n", SegmentKind::marker, Role::system);
        b.add(strip(m.content, false, true), SegmentKind::content, Role::user);
      } else {
        b.add(strip(m.content), SegmentKind::content, Role::user);
      }
      b.add(" [/INST]", SegmentKind::marker, Role::user);
    } else {
      b.add(" ", SegmentKind::header, Role::assistant);
      b.add(strip(m.content), SegmentKind::content, Role::assistant);
      b.add(" </s>", SegmentKind::marker, Role::assistant);
    }
  }
  return b.out;
}

// Meta-Llama-3-Instruct's template: bos once, then per message
//   '<|start_header_id|>' + role + '<|end_header_id|>\n\n' + content|trim + '<|eot_id|>'
// and a generation prompt '<|start_header_id|>assistant<|end_header_id|>\n\n'.
std::vector<Segment> render_llama3(const std::vector<ChatMessage>& messages, bool generation) {
  Builder b;
  if (!messages.empty()) b.add("<|begin_of_text|>", SegmentKind::marker, messages[0].role);
  const auto header = [&](Role role) {
    b.add(std::string("<|start_header_id|>") + role_name(role) + "<|end_header_id|>\n\n",
          SegmentKind::header, role);
  };
  for (const auto& m : messages) {
    header(m.role);
    b.add(strip(m.content), SegmentKind::content, m.role);
    b.add("<|eot_id|>", SegmentKind::marker, m.role);
  }
  if (generation) header(Role::assistant);
  return b.out;
}

std::vector<Segment> render_raw(const std::vector<ChatMessage>& messages) {
  Builder b;
  for (const auto& m : messages) b.add(m.content, SegmentKind::content, m.role);
  return b.out;
}

}  // namespace

std::vector<Segment> render_chat(ChatTemplateKind kind, const std::vector<ChatMessage>& messages,
                                 const RenderOptions& options) {
  std::vector<ChatMessage> with_system;
  const std::vector<ChatMessage>* msgs = &messages;
  if (options.default_system && (messages.empty() || messages[0].role != Role::system)) {
    with_system.push_back({Role::system, *options.default_system});
    with_system.insert(with_system.end(), messages.begin(), messages.end());
    msgs = &with_system;
  }
  switch (kind) {
    case ChatTemplateKind::chatml:
      return render_chatml(*msgs, options.add_generation_prompt);
    case ChatTemplateKind::llama2:
      return render_llama2(*msgs);
    case ChatTemplateKind::llama3:
      return render_llama3(*msgs, options.add_generation_prompt);
    case ChatTemplateKind::raw:
      return render_raw(*msgs);
  }
  return {};
}

std::string join_segments(const std::vector<Segment>& segments) {
  std::string out;
  for (const auto& s : segments) out += s.text;
  return out;
}

namespace {

std::optional<ChatTemplateKind> kind_from_template_text(const std::string& t) {
  if (t.find("<|im_start|>") != std::string::npos) return ChatTemplateKind::chatml;
  if (t.find("<|start_header_id|>") != std::string::npos) return ChatTemplateKind::llama3;
  if (t.find("[INST]") != std::string::npos) return ChatTemplateKind::llama2;
  return std::nullopt;
}

std::optional<nlohmann::json> read_json(const fs::path& path) {
  if (!fs::is_regular_file(path)) return std::nullopt;
  return io::read_json(path);
}

}  // namespace

ChatTemplateKind detect_chat_template(const fs::path& model_dir) {
  // 1. The template text itself: tokenizer_config.json "chat_template" (a string, or a list of
  //    {name, template} of which "default" counts), or a separate chat_template.jinja/.json.
  std::vector<std::string> texts;
  auto config = read_json(model_dir / "tokenizer_config.json");
  if (config) {
    if (auto it = config->find("chat_template"); it != config->end()) {
      if (it->is_string()) texts.push_back(it->get<std::string>());
      if (it->is_array())
        for (const auto& t : *it)
          if (t.is_object() && t.value("name", std::string()) == "default" &&
              t.contains("template") && t["template"].is_string())
            texts.push_back(t["template"].get<std::string>());
    }
  }
  if (fs::is_regular_file(model_dir / "chat_template.jinja")) {
    std::ifstream in(model_dir / "chat_template.jinja");
    texts.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  if (auto t = read_json(model_dir / "chat_template.json"))
    if (t->contains("chat_template") && (*t)["chat_template"].is_string())
      texts.push_back((*t)["chat_template"].get<std::string>());
  for (const auto& t : texts)
    if (auto kind = kind_from_template_text(t)) return *kind;
  // 2. The special tokens the tokenizer declares.
  std::string tokens;
  if (config) {
    if (auto it = config->find("added_tokens_decoder"); it != config->end()) tokens += it->dump();
    for (const char* key : {"eos_token", "bos_token", "additional_special_tokens"})
      if (auto it = config->find(key); it != config->end()) tokens += it->dump();
  }
  if (auto tj = read_json(model_dir / "tokenizer.json"))
    if (auto it = tj->find("added_tokens"); it != tj->end()) tokens += it->dump();
  if (tokens.find("<|im_start|>") != std::string::npos) return ChatTemplateKind::chatml;
  if (tokens.find("<|start_header_id|>") != std::string::npos) return ChatTemplateKind::llama3;
  // 3. A bare Qwen rank file: Qwen chat models speak ChatML.
  if (fs::is_directory(model_dir))
    for (const auto& e : fs::directory_iterator(model_dir))
      if (e.path().filename() == "qwen.tiktoken") return ChatTemplateKind::chatml;
  return ChatTemplateKind::raw;
}

}  // namespace ming::text
