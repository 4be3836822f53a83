// Chat templates rendered as segments. Each built-in renderer reproduces the Hugging Face Jinja
// template of its family character for character (see the comments), split at the points
// training masks need; a model's own Jinja template is interpreted and split by prefix rendering.
#include "ming/io/json.h"
#include "ming/text/chat_template.h"

#include <fstream>

#include "ming/core/error.h"
#include "ming/text/jinja.h"
#include "text/jinja/value.h"

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
    case ChatTemplateKind::jinja:
      return "jinja";
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

// str.strip() as the models' templates apply it (Unicode whitespace, as @huggingface/jinja).
std::string strip(const std::string& s, bool left = true, bool right = true) {
  return jinja::js_trim(s, left, right);
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

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

std::vector<Segment> render_jinja(const ChatTemplate& t, const std::vector<ChatMessage>& messages,
                                  bool generation) {
  const nlohmann::ordered_json all = messages_json(messages);
  const auto render_prefix = [&](size_t n, bool gen) {
    return t.render(nlohmann::ordered_json(all.begin(), all.begin() + static_cast<long>(n)), gen);
  };
  const std::string full = render_prefix(messages.size(), false);
  Builder b;
  size_t pos = 0;
  const auto cannot_locate = [&](size_t i) {
    fail_usage(
        "{}: cannot find assistant turn {} for label masking: rendering the conversation up to it "
        "is not a prefix of rendering the whole conversation",
        t.name(), i);
  };
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role != Role::assistant) continue;
    const std::string before = render_prefix(i, false);
    const std::string opened = render_prefix(i, true);
    if (!starts_with(full, opened) || opened.size() < pos) cannot_locate(i);
    const size_t header =
        starts_with(opened, before) && before.size() >= pos ? before.size() : opened.size();
    const std::string with_turn = render_prefix(i + 1, false);
    if (!starts_with(with_turn, opened)) cannot_locate(i);
    const std::string turn = with_turn.substr(opened.size());
    size_t kept = turn.size();
    while (kept > 0 && full.compare(opened.size(), kept, turn, turn.size() - kept, kept) != 0)
      --kept;
    if (kept == 0 && !turn.empty()) cannot_locate(i);
    const Role before_role = i > 0 ? messages[i - 1].role : Role::user;
    b.add(full.substr(pos, header - pos), SegmentKind::content, before_role);
    b.add(full.substr(header, opened.size() - header), SegmentKind::header, Role::assistant);
    b.add(full.substr(opened.size(), kept), SegmentKind::content, Role::assistant);
    pos = opened.size() + kept;
  }
  b.add(full.substr(pos), SegmentKind::content,
        messages.empty() ? Role::user : messages.back().role);
  if (generation) {
    const std::string prompt = render_prefix(messages.size(), true);
    if (!starts_with(prompt, full))
      fail_usage(
          "{}: the generation prompt changes the rendering of the conversation before it, so "
          "prompt and history cannot be told apart",
          t.name());
    b.add(prompt.substr(full.size()), SegmentKind::header, Role::assistant);
  }
  return b.out;
}

}  // namespace

nlohmann::ordered_json messages_json(const std::vector<ChatMessage>& messages) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const auto& m : messages)
    out.push_back({{"role", role_name(m.role)}, {"content", m.content}});
  return out;
}

std::vector<Segment> render_chat(const ChatTemplate& chat_template,
                                 const std::vector<ChatMessage>& messages,
                                 const RenderOptions& options) {
  std::vector<ChatMessage> with_system;
  const std::vector<ChatMessage>* msgs = &messages;
  if (options.default_system && (messages.empty() || messages[0].role != Role::system)) {
    with_system.push_back({Role::system, *options.default_system});
    with_system.insert(with_system.end(), messages.begin(), messages.end());
    msgs = &with_system;
  }
  switch (chat_template.kind()) {
    case ChatTemplateKind::jinja:
      return render_jinja(chat_template, *msgs, options.add_generation_prompt);
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

struct TemplateSource {
  std::string text;
  std::string origin;
};

// The Jinja chat templates a model folder carries, in the order transformers prefers them:
// tokenizer_config.json "chat_template" (a string, or a list of {name, template} of which
// "default" counts), then chat_template.jinja, then chat_template.json.
std::vector<TemplateSource> template_sources(const fs::path& model_dir,
                                             const std::optional<nlohmann::json>& config) {
  std::vector<TemplateSource> out;
  const std::string config_path = (model_dir / "tokenizer_config.json").string();
  if (config) {
    if (auto it = config->find("chat_template"); it != config->end()) {
      if (it->is_string()) out.push_back({it->get<std::string>(), config_path + " chat_template"});
      if (it->is_array())
        for (const auto& t : *it)
          if (t.is_object() && t.value("name", std::string()) == "default" &&
              t.contains("template") && t["template"].is_string())
            out.push_back(
                {t["template"].get<std::string>(), config_path + " chat_template 'default'"});
    }
  }
  if (fs::is_regular_file(model_dir / "chat_template.jinja")) {
    std::ifstream in(model_dir / "chat_template.jinja");
    out.push_back(
        {std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()),
         (model_dir / "chat_template.jinja").string()});
  }
  if (auto t = read_json(model_dir / "chat_template.json"))
    if (t->contains("chat_template") && (*t)["chat_template"].is_string())
      out.push_back({(*t)["chat_template"].get<std::string>(),
                     (model_dir / "chat_template.json").string() + " chat_template"});
  return out;
}

// The special tokens transformers passes to the template: strings or AddedToken objects.
nlohmann::ordered_json special_tokens_of(const std::optional<nlohmann::json>& config) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  if (!config) return out;
  for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                          "cls_token", "mask_token"}) {
    auto it = config->find(key);
    if (it == config->end()) continue;
    if (it->is_string())
      out[key] = it->get<std::string>();
    else if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
      out[key] = (*it)["content"].get<std::string>();
  }
  return out;
}

}  // namespace

ChatTemplateKind detect_chat_template(const fs::path& model_dir) {
  // 1. The template text itself.
  auto config = read_json(model_dir / "tokenizer_config.json");
  for (const auto& t : template_sources(model_dir, config))
    if (auto kind = kind_from_template_text(t.text)) return *kind;
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

ChatTemplate::ChatTemplate(ChatTemplateKind kind) : kind_(kind) {
  if (kind == ChatTemplateKind::jinja)
    fail("ChatTemplate: a Jinja template needs its source (ChatTemplate::from_jinja)");
}

ChatTemplate ChatTemplate::from_jinja(const std::string& source, const std::string& origin,
                                      nlohmann::ordered_json special_tokens) {
  ChatTemplate t(ChatTemplateKind::raw);
  t.kind_ = ChatTemplateKind::jinja;
  t.jinja_ = std::make_shared<const jinja::Template>(source, origin);
  t.special_tokens_ = std::move(special_tokens);
  t.origin_ = origin;
  return t;
}

ChatTemplate ChatTemplate::load(const fs::path& model_dir) {
  const auto config = read_json(model_dir / "tokenizer_config.json");
  const auto sources = template_sources(model_dir, config);
  if (!sources.empty()) {
    try {
      return from_jinja(sources.front().text, sources.front().origin, special_tokens_of(config));
    } catch (const jinja::TemplateError& e) {
      ChatTemplate t(ChatTemplateKind::raw);
      t.kind_ = ChatTemplateKind::jinja;
      t.origin_ = sources.front().origin;
      t.parse_error_ = e.what();
      return t;
    }
  }
  return ChatTemplate(detect_chat_template(model_dir));
}

ChatTemplate ChatTemplate::resolve(const std::string& name,
                                   const std::optional<fs::path>& model_dir) {
  if (name != "auto") return ChatTemplate(parse_chat_template(name));
  return model_dir ? load(*model_dir) : ChatTemplate(ChatTemplateKind::raw);
}

std::string ChatTemplate::name() const {
  if (kind_ == ChatTemplateKind::jinja) return "jinja (" + origin_ + ")";
  return chat_template_name(kind_);
}

std::string ChatTemplate::render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                 const nlohmann::ordered_json& tools,
                                 const nlohmann::ordered_json& extra) const {
  if (kind_ == ChatTemplateKind::jinja) {
    if (!jinja_) throw jinja::TemplateError(parse_error_);
    // What transformers' apply_chat_template passes: messages, tools (None when absent),
    // add_generation_prompt, the special tokens, then the caller's extra variables.
    nlohmann::ordered_json context = special_tokens_;
    context["messages"] = messages;
    context["tools"] = tools;
    context["add_generation_prompt"] = add_generation_prompt;
    for (const auto& [k, v] : extra.items()) context[k] = v;
    return jinja_->render(context);
  }
  if (!tools.is_null() && !tools.empty())
    fail_usage("the built-in template '{}' cannot render tools (use the model's own template)",
               name());
  std::vector<ChatMessage> turns;
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    const auto role = m.contains("role") && m["role"].is_string()
                          ? parse_role(m["role"].get<std::string>())
                          : std::nullopt;
    if (!role || !m.contains("content") || !m["content"].is_string())
      fail_usage(
          "message {}: the built-in template '{}' renders system/user/assistant turns with text "
          "content only (use the model's own template for tools and other roles)",
          i, name());
    turns.push_back({*role, m["content"].get<std::string>()});
  }
  RenderOptions options;
  options.add_generation_prompt = add_generation_prompt;
  return join_segments(render_chat(*this, turns, options));
}

}  // namespace ming::text
