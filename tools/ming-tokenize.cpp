// ming-tokenize: text <-> token ids with any tokenizer MING loads, as JSON lines; with --chat,
// conversations -> the exact prompt the model's chat template renders.
//
//   echo '"Hello world"' | ming-tokenize --tokenizer models/qwen1.5-0.5b-chat   -> [9707,1879]
//   echo '[9707,1879]'   | ming-tokenize --tokenizer qwen.tiktoken --decode       -> "Hello world"
//   echo '{"messages":[{"role":"user","content":"Hi"}],"add_generation_prompt":true}' |
//     ming-tokenize --tokenizer models/qwen3 --chat              -> "<|im_start|>user\nHi..."
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>

#include <nlohmann/json.hpp>

#include "common/cli.h"
#include "ming/core/error.h"
#include "ming/text/chat_template.h"
#include "ming/text/tokenizer.h"

namespace {

struct Options {
  std::string tokenizer;
  std::string pretokenizer = "qwen2";
  std::string input;
  bool pieces = false;
  bool decode = false;
  bool no_special = false;
  bool bos = false;
  bool skip_special = false;
  bool chat = false;
  bool ids = false;
  std::string template_name = "auto";
};

// One conversation line: {"messages": [...], "add_generation_prompt": bool, "tools": [...]};
// other keys become template variables (e.g. "enable_thinking": false).
std::string render_conversation(const ming::text::ChatTemplate& chat_template,
                                const std::string& line, const std::string& where) {
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    ming::fail_usage("{}: not valid JSON: {}", where, e.what());
  }
  if (!j.is_object() || !j.contains("messages") || !j["messages"].is_array())
    ming::fail_usage("{}: expected an object with a \"messages\" list", where);
  bool generation = false;
  if (j.contains("add_generation_prompt")) {
    if (!j["add_generation_prompt"].is_boolean())
      ming::fail_usage("{}: \"add_generation_prompt\" must be true or false", where);
    generation = j["add_generation_prompt"].get<bool>();
  }
  nlohmann::ordered_json tools = j.contains("tools") ? j["tools"] : nlohmann::ordered_json();
  if (!tools.is_null() && !tools.is_array())
    ming::fail_usage("{}: \"tools\" must be a list", where);
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
  for (const auto& [k, v] : j.items())
    if (k != "messages" && k != "add_generation_prompt" && k != "tools") extra[k] = v;
  try {
    return chat_template.render(j["messages"], generation, tools, extra);
  } catch (const ming::UsageError& e) {
    ming::fail_usage("{}: {}", where, e.what());
  }
}

void run(const Options& o) {
  ming::text::TokenizerLoadOptions load;
  load.tiktoken_pretokenizer = ming::text::parse_pretokenizer(o.pretokenizer);
  const auto tok = ming::text::load_tokenizer(o.tokenizer, load);
  std::ifstream file;
  if (!o.input.empty()) {
    file.open(o.input, std::ios::binary);
    if (!file) ming::fail_usage("cannot read --input {}", o.input);
  }
  std::istream& in = o.input.empty() ? std::cin : file;
  const std::string source = o.input.empty() ? "stdin" : o.input;
  const auto dump = [](const nlohmann::json& j) {
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  const auto encode = [&](const std::string& text) {
    nlohmann::json arr = nlohmann::json::array();
    for (auto id : tok->encode(text, o.bos, !o.no_special)) {
      if (o.pieces)
        arr.push_back(tok->piece(id));
      else
        arr.push_back(id);
    }
    return dump(arr);
  };
  std::optional<ming::text::ChatTemplate> chat_template;
  if (o.chat) {
    const std::filesystem::path path = o.tokenizer;
    const auto dir = std::filesystem::is_directory(path) ? path : path.parent_path();
    chat_template = ming::text::ChatTemplate::resolve(o.template_name, dir);
  }
  std::string line, out;
  for (size_t line_no = 1; std::getline(in, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (chat_template) {
      const std::string prompt =
          render_conversation(*chat_template, line, fmt::format("{} line {}", source, line_no));
      std::cout << (o.ids ? encode(prompt) : dump(prompt)) << '\n';
      continue;
    }
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      ming::fail_usage("{} line {}: not valid JSON: {}", source, line_no, e.what());
    }
    if (o.decode) {
      if (!j.is_array())
        ming::fail_usage("{} line {}: expected a JSON array of token ids", source, line_no);
      std::vector<ming::text::TokenId> ids;
      for (const auto& v : j) {
        if (!v.is_number_integer())
          ming::fail_usage("{} line {}: expected integer token ids, got {}", source, line_no,
                           v.dump());
        ids.push_back(v.get<ming::text::TokenId>());
      }
      out = dump(tok->decode(ids, o.skip_special));
    } else {
      if (!j.is_string())
        ming::fail_usage("{} line {}: expected a JSON string, got {}", source, line_no,
                         j.type_name());
      out = encode(j.get_ref<const std::string&>());
    }
    std::cout << out << '\n';
  }
  std::cout.flush();
}

}  // namespace

int main(int argc, char** argv) {
  std::ios::sync_with_stdio(false);
  CLI::App app{"ming-tokenize: JSON lines of text -> token ids (or pieces), or ids -> text",
               "ming-tokenize"};
  Options o;
  app.add_option("--tokenizer", o.tokenizer,
                 "model folder or tokenizer file (tokenizer.json, tokenizer.model, vocab.json, "
                 "*.tiktoken, tokenizer.bin)")
      ->required();
  app.add_option("--pretokenizer", o.pretokenizer,
                 "pattern and special tokens for a bare *.tiktoken: qwen2 | llama3 | gpt2")
      ->capture_default_str();
  app.add_option("--input", o.input, "read JSON lines from FILE instead of stdin");
  app.add_flag("--pieces", o.pieces, "print token strings instead of ids");
  app.add_flag("--decode", o.decode, "read arrays of ids, write JSON strings");
  app.add_flag("--no-special", o.no_special, "treat special tokens in text as plain text");
  app.add_flag("--skip-special", o.skip_special, "with --decode: leave special tokens out");
  app.add_flag("--bos", o.bos, "prepend the BOS token (when the tokenizer has one)");
  auto* chat = app.add_flag("--chat", o.chat,
                            "read conversations {\"messages\", \"add_generation_prompt\", "
                            "\"tools\"}, write the rendered prompt as a JSON string");
  app.add_flag("--ids", o.ids, "with --chat: write the prompt's token ids instead")->needs(chat);
  app.add_option("--template", o.template_name,
                 "with --chat: auto (the tokenizer folder's own template) | chatml | llama2 | "
                 "llama3 | raw")
      ->check(CLI::IsMember({"auto", "chatml", "llama2", "llama3", "raw"}))
      ->capture_default_str()
      ->needs(chat);
  return ming::cli::run(app, argc, argv, [&] { run(o); });
}
