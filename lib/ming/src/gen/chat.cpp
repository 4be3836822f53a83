#include "ming/gen/chat.h"

#include "ming/core/error.h"
#include "ming/core/log.h"

namespace ming::gen {

void check_utf8(std::string_view s, const std::string& what) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c >> 5) == 0x6) {
      n = 1, cp = c & 0x1F;
    } else if ((c >> 4) == 0xE) {
      n = 2, cp = c & 0x0F;
    } else if ((c >> 3) == 0x1E) {
      n = 3, cp = c & 0x07;
    } else {
      fail_usage("{}: not valid UTF-8 (byte {} is 0x{:02X})", what, i, c);
    }
    if (i + n >= s.size())
      fail_usage("{}: not valid UTF-8 (truncated character at byte {})", what, i);
    for (size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80)
        fail_usage("{}: not valid UTF-8 (byte {} is 0x{:02X})", what, i + k, cc);
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8 either.
    static const uint32_t min_cp[] = {0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[n] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
      fail_usage("{}: not valid UTF-8 (bad sequence at byte {})", what, i);
    i += n + 1;
  }
}

ChatSession::ChatSession(model::LoadedModel& model, ChatOptions options)
    : model_(model), options_(std::move(options)) {
  if (!model_.tokenizer) fail("ChatSession: the model was loaded without a tokenizer");
}

std::vector<int64_t> ChatSession::prompt_ids(const std::string& message) const {
  const auto& tok = *model_.tokenizer;
  std::vector<int64_t> ids;
  if (options_.chat_template.kind() == text::ChatTemplateKind::raw) {
    if (auto bos = tok.bos_id()) ids.push_back(*bos);
    for (auto id : tok.encode(message, /*add_bos=*/false)) ids.push_back(id);
    if (ids.empty())
      fail_usage(
          "empty prompt with the raw template, and the tokenizer has no BOS token to "
          "start from");
    return ids;
  }
  std::vector<text::ChatMessage> messages;
  if (options_.system) messages.push_back({text::Role::system, *options_.system});
  messages.insert(messages.end(), history_.begin(), history_.end());
  messages.push_back({text::Role::user, message});
  if (options_.chat_template.kind() == text::ChatTemplateKind::jinja) {
    const std::string text = options_.chat_template.render(text::messages_json(messages),
                                                           /*add_generation_prompt=*/true);
    for (auto id : tok.encode(text, /*add_bos=*/false, /*parse_special=*/true)) ids.push_back(id);
    return ids;
  }
  text::RenderOptions ro;
  ro.add_generation_prompt = true;
  for (const auto& seg : text::render_chat(options_.chat_template, messages, ro))
    for (auto id : tok.encode(seg.text, /*add_bos=*/false, /*parse_special=*/true))
      ids.push_back(id);
  return ids;
}

std::string ChatSession::reply(const std::string& message,
                               const std::function<void(const std::string&)>& stream) {
  check_utf8(message, "prompt");
  auto ids = prompt_ids(message);
  const int64_t limit = model_.config.max_position_embeddings;
  if (static_cast<int64_t>(ids.size()) + options_.generation.max_new_tokens > limit)
    log::warn("prompt ({} tokens) + max_new_tokens ({}) exceed the model's {} positions",
              ids.size(), options_.generation.max_new_tokens, limit);
  StreamCallback cb;
  if (stream) cb = [&](size_t, const std::string& delta) { stream(delta); };
  auto out = generate(model_.model, *model_.tokenizer, {ids}, options_.generation, cb);
  std::string text = out[0].text;
  if (options_.chat_template.kind() != text::ChatTemplateKind::raw) {
    history_.push_back({text::Role::user, message});
    history_.push_back({text::Role::assistant, text});
  }
  return text;
}

}  // namespace ming::gen
