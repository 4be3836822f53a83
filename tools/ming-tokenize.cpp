// ming-tokenize: text <-> token ids with any tokenizer MING loads, as JSON lines.
//
//   echo '"Hello world"' | ming-tokenize --tokenizer models/qwen1.5-0.5b-chat   -> [9707,1879]
//   echo '[9707,1879]'   | ming-tokenize --tokenizer qwen.tiktoken --decode       -> "Hello world"
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "common/cli.h"
#include "ming/core/error.h"
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
};

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
  std::string line, out;
  for (size_t line_no = 1; std::getline(in, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
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
      const auto ids = tok->encode(j.get_ref<const std::string&>(), o.bos, !o.no_special);
      nlohmann::json arr = nlohmann::json::array();
      for (auto id : ids) {
        if (o.pieces)
          arr.push_back(tok->piece(id));
        else
          arr.push_back(id);
      }
      out = dump(arr);
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
  return ming::cli::run(app, argc, argv, [&] { run(o); });
}
