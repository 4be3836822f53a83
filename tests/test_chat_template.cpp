// Chat templates: exact strings as the models' Hugging Face Jinja templates render them, and the
// segment kinds that training masks rely on.
#include <doctest/doctest.h>

#include "ming/core/error.h"
#include "ming/text/chat_template.h"
#include "ming/text/tokenizer.h"
#include "support.h"

using namespace ming::text;

namespace {

const std::vector<ChatMessage> kConversation = {
    {Role::system, "You are helpful."},
    {Role::user, " Hi there "},
    {Role::assistant, "Hello! "},
    {Role::user, "Bye"},
};

std::string kinds(const std::vector<Segment>& segments) {
  std::string out;
  for (const auto& s : segments)
    out += s.kind == SegmentKind::marker ? 'M' : s.kind == SegmentKind::header ? 'H' : 'C';
  return out;
}

}  // namespace

TEST_CASE("chatml renders Qwen's template with marker/header/content segments") {
  RenderOptions opts;
  opts.add_generation_prompt = true;
  const auto segs = render_chat(ChatTemplateKind::chatml, kConversation, opts);
  CHECK(join_segments(segs) ==
        "<|im_start|>system\nYou are helpful.<|im_end|>\n"
        "<|im_start|>user\n Hi there <|im_end|>\n"
        "<|im_start|>assistant\nHello! <|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n");
  CHECK(kinds(segs) ==
        "MHCMM"
        "MHCMM"
        "MHCMM"
        "MHCMM"
        "MH");
  // The assistant turn: <|im_start|> marker, "assistant\n" header, content, <|im_end|>, "\n".
  CHECK(segs[10].text == "<|im_start|>");
  CHECK(segs[11].text == "assistant\n");
  CHECK(segs[11].role == Role::assistant);
  CHECK(segs[12].text == "Hello! ");
  CHECK(segs[12].kind == SegmentKind::content);
  CHECK(segs[13].text == "<|im_end|>");
  CHECK(segs[14].text == "\n");
  CHECK(segs[14].role == Role::assistant);
  CHECK(segs.back().text == "assistant\n");
}

TEST_CASE("chatml adds a default system prompt only when asked and none is given") {
  RenderOptions opts;
  CHECK(join_segments(render_chat(ChatTemplateKind::chatml, {{Role::user, "hi"}}, opts)) ==
        "<|im_start|>user\nhi<|im_end|>\n");
  opts.default_system = "You are a helpful assistant.";
  CHECK(join_segments(render_chat(ChatTemplateKind::chatml, {{Role::user, "hi"}}, opts)) ==
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n");
  CHECK(join_segments(render_chat(ChatTemplateKind::chatml, kConversation, opts))
            .find("helpful assistant") == std::string::npos);
}

TEST_CASE("llama2 folds the system prompt into the first [INST] with <s>/</s> per exchange") {
  const auto segs = render_chat(ChatTemplateKind::llama2, kConversation);
  CHECK(join_segments(segs) ==
        "<s>[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\n Hi there [/INST] Hello! </s>"
        "<s>[INST] Bye [/INST]");
  CHECK(kinds(segs) ==
        "MMMCMCM"
        "HCM"
        "MMCM");
  CHECK(segs[3].role == Role::system);
  CHECK(segs[3].text == "You are helpful.");
  CHECK(segs[8].text == "Hello!");
  CHECK(segs[8].role == Role::assistant);
  CHECK(join_segments(render_chat(ChatTemplateKind::llama2, {{Role::user, " x "}})) ==
        "<s>[INST] x [/INST]");
  CHECK_THROWS_AS(render_chat(ChatTemplateKind::llama2, {{Role::user, "a"}, {Role::user, "b"}}),
                  ming::UsageError);
}

TEST_CASE("llama3 renders header tokens, trims content and adds the generation header") {
  RenderOptions opts;
  opts.add_generation_prompt = true;
  const auto segs = render_chat(ChatTemplateKind::llama3,
                                {{Role::system, "You are helpful."}, {Role::user, " Hi\n"}}, opts);
  CHECK(join_segments(segs) ==
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n");
  CHECK(kinds(segs) ==
        "M"
        "HCM"
        "HCM"
        "H");
  CHECK(segs.back().role == Role::assistant);
}

TEST_CASE("raw template concatenates contents only") {
  RenderOptions opts;
  opts.add_generation_prompt = true;
  const auto segs =
      render_chat(ChatTemplateKind::raw, {{Role::user, "Q: 1+1?"}, {Role::assistant, " 2"}}, opts);
  CHECK(join_segments(segs) == "Q: 1+1? 2");
  CHECK(kinds(segs) == "CC");
}

TEST_CASE("chatml segments tokenized one by one give Qwen's ids") {
  const auto tok = load_tokenizer(ming::test::data_dir() / "models" / "qwen.tiktoken");
  std::vector<TokenId> ids;
  for (const auto& s : render_chat(ChatTemplateKind::chatml, {{Role::user, "hi"}})) {
    const auto part = tok->encode(s.text);
    ids.insert(ids.end(), part.begin(), part.end());
  }
  // Same ids as the whole string (reference in test_tokenizer.cpp: tiktoken's algorithm).
  CHECK(ids == std::vector<TokenId>{151644, 872, 198, 6023, 151645, 198});
}

TEST_CASE("template names and roles parse; unknown ones are usage errors") {
  CHECK(parse_chat_template("chatml") == ChatTemplateKind::chatml);
  CHECK(parse_chat_template("llama3") == ChatTemplateKind::llama3);
  CHECK(chat_template_name(ChatTemplateKind::llama2) == "llama2");
  CHECK_THROWS_AS(parse_chat_template("vicuna"), ming::UsageError);
  CHECK(parse_role("human") == Role::user);
  CHECK(parse_role("gpt") == Role::assistant);
  CHECK_FALSE(parse_role("tool").has_value());
}

TEST_CASE("detect_chat_template reads tokenizer_config.json's template or special tokens") {
  ming::test::TempDir dir;
  CHECK(detect_chat_template(dir.path()) == ChatTemplateKind::raw);
  ming::test::write_text(
      dir / "tokenizer_config.json",
      R"({"chat_template":"{% for message in messages %}{{'<|im_start|>' + )"
      R"(message['role'] + '\n' + message['content'] + '<|im_end|>'}}{% endfor %}"})");
  CHECK(detect_chat_template(dir.path()) == ChatTemplateKind::chatml);
  ming::test::write_text(
      dir / "tokenizer_config.json",
      R"({"chat_template":"{{ bos_token + '[INST] ' + content + ' [/INST]' }}"})");
  CHECK(detect_chat_template(dir.path()) == ChatTemplateKind::llama2);
  ming::test::write_text(dir / "tokenizer_config.json",
                         R"({"added_tokens_decoder":{"128006":{"content":"<|start_header_id|>",)"
                         R"("special":true}}})");
  CHECK(detect_chat_template(dir.path()) == ChatTemplateKind::llama3);
}
