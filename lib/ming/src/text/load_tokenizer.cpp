// Finding and loading a model folder's tokenizer, with its special tokens and BOS/EOS.
#include <algorithm>
#include <fstream>

#include <nlohmann/json.hpp>

#include "ming/io/json.h"
#include "ming/core/error.h"
#include "ming/core/log.h"
#include "ming/text/tokenizer.h"
#include "text/bpe_tokenizer.h"
#include "text/factories.h"

namespace ming::text {
namespace fs = std::filesystem;
using detail::AddedToken;
using detail::AddedTokens;
using nlohmann::json;

Pretokenizer parse_pretokenizer(const std::string& name) {
  if (name == "qwen2" || name == "qwen") return Pretokenizer::qwen2;
  if (name == "llama3" || name == "llama-3") return Pretokenizer::llama3;
  if (name == "gpt2" || name == "gpt-2") return Pretokenizer::gpt2;
  fail_usage("unknown pre-tokenizer '{}' (expected qwen2, llama3 or gpt2)", name);
}

std::string pretokenizer_name(Pretokenizer pretokenizer) {
  switch (pretokenizer) {
    case Pretokenizer::qwen2:
      return "qwen2";
    case Pretokenizer::llama3:
      return "llama3";
    case Pretokenizer::gpt2:
      return "gpt2";
  }
  return "qwen2";
}

namespace {

std::optional<json> read_json_if_exists(const fs::path& path) {
  if (!fs::is_regular_file(path)) return std::nullopt;
  return io::read_json(path);
}

// "bos_token": "<s>" or {"content": "<s>", ...} or null.
std::optional<std::string> token_text(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return std::nullopt;
}

// What tokenizer_config.json, special_tokens_map.json, added_tokens.json and
// generation_config.json say about special tokens.
struct FolderSpecials {
  AddedTokens added;
  std::optional<std::string> bos, eos;
  std::vector<TokenId> eos_ids;  // generation_config.json eos_token_id
  std::string tokenizer_class;
};

FolderSpecials read_folder_specials(const fs::path& dir) {
  FolderSpecials s;
  if (auto map = read_json_if_exists(dir / "special_tokens_map.json")) {
    s.bos = token_text(*map, "bos_token");
    s.eos = token_text(*map, "eos_token");
  }
  if (auto added = read_json_if_exists(dir / "added_tokens.json"); added && added->is_object()) {
    for (auto it = added->begin(); it != added->end(); ++it)
      if (it.value().is_number_integer())
        s.added.add({it.key(), it.value().get<TokenId>(), true, false, false});
  }
  if (auto config = read_json_if_exists(dir / "tokenizer_config.json")) {
    const std::string where = (dir / "tokenizer_config.json").string();
    if (auto decoder = config->find("added_tokens_decoder");
        decoder != config->end() && decoder->is_object()) {
      for (auto it = decoder->begin(); it != decoder->end(); ++it) {
        AddedToken t;
        try {
          t.id = std::stoi(it.key());
        } catch (const std::exception&) {
          fail_usage("{}: added_tokens_decoder key '{}' is not a token id", where, it.key());
        }
        const json& v = it.value();
        if (!v.is_object() || !v.contains("content") || !v["content"].is_string())
          fail_usage("{}: added_tokens_decoder[{}] has no string 'content'", where, it.key());
        t.content = v["content"].get<std::string>();
        t.special = v.value("special", true);
        t.lstrip = v.value("lstrip", false);
        t.rstrip = v.value("rstrip", false);
        s.added.add(t);
      }
    }
    if (config->contains("bos_token")) s.bos = token_text(*config, "bos_token");
    if (config->contains("eos_token")) s.eos = token_text(*config, "eos_token");
    s.tokenizer_class = config->value("tokenizer_class", std::string());
  }
  if (auto gen = read_json_if_exists(dir / "generation_config.json")) {
    if (auto e = gen->find("eos_token_id"); e != gen->end()) {
      if (e->is_number_integer()) s.eos_ids.push_back(e->get<TokenId>());
      if (e->is_array())
        for (const auto& v : *e)
          if (v.is_number_integer()) s.eos_ids.push_back(v.get<TokenId>());
    }
  }
  return s;
}

void push_unique(std::vector<TokenId>& v, TokenId id) {
  if (std::find(v.begin(), v.end(), id) == v.end()) v.push_back(id);
}

// Chat-turn terminators that end generation whenever the vocabulary has them.
constexpr const char* kTurnEnds[] = {"<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>",
                                     "</s>"};

std::unique_ptr<Tokenizer> finish_bpe(detail::BpeSpec spec, const FolderSpecials& folder,
                                      bool has_config) {
  for (const auto& t : folder.added.all())
    if (!spec.added.find(t.content)) spec.added.add(t);
  const auto find = [&](const std::string& piece) -> std::optional<TokenId> {
    if (auto id = spec.added.find(piece)) return id;
    auto it = spec.vocab.find(piece);
    if (it != spec.vocab.end()) return it->second;
    return std::nullopt;
  };
  if (has_config) {
    // tokenizer_config.json is authoritative: Qwen's says bos_token null.
    spec.bos.reset();
    if (folder.bos) spec.bos = find(*folder.bos);
  } else if (!spec.bos) {
    for (const char* name : {"<|begin_of_text|>", "<s>"})
      if (auto id = spec.added.find(name)) {
        spec.bos = id;
        break;
      }
  }
  if (folder.eos)
    if (auto id = find(*folder.eos)) push_unique(spec.eos, *id);
  for (TokenId id : folder.eos_ids) push_unique(spec.eos, id);
  for (const char* name : kTurnEnds)
    if (auto id = spec.added.find(name)) push_unique(spec.eos, *id);
  return detail::make_bpe_tokenizer(std::move(spec));
}

std::unique_ptr<Tokenizer> load_sentencepiece(const fs::path& file, const FolderSpecials& folder) {
  // Resolve the config's BOS/EOS names against a plain load first.
  AddedTokens none;
  auto plain = detail::make_sentencepiece_tokenizer(file, none, std::nullopt, {});
  std::optional<TokenId> bos;
  std::vector<TokenId> eos = folder.eos_ids;
  const auto find = [&](const std::string& name) -> std::optional<TokenId> {
    if (auto id = folder.added.find(name)) return id;
    return plain->find(name);
  };
  if (folder.bos) bos = find(*folder.bos);
  if (folder.eos)
    if (auto id = find(*folder.eos)) push_unique(eos, *id);
  for (const auto& t : folder.added.all())
    for (const char* name : kTurnEnds)
      if (t.content == name) push_unique(eos, t.id);
  return detail::make_sentencepiece_tokenizer(file, folder.added, bos, eos);
}

Pretokenizer vocab_merges_family(const FolderSpecials& folder, Pretokenizer fallback) {
  if (folder.tokenizer_class.rfind("Qwen2", 0) == 0) return Pretokenizer::qwen2;
  if (folder.tokenizer_class.rfind("GPT2", 0) == 0) return Pretokenizer::gpt2;
  return fallback;
}

std::unique_ptr<Tokenizer> load_tokenizer_json(const fs::path& file, const FolderSpecials& folder,
                                               bool has_config) {
  auto j = read_json_if_exists(file);
  if (!j) fail_usage("cannot read {}", file.string());
  return finish_bpe(detail::bpe_spec_from_tokenizer_json(*j, file), folder, has_config);
}

bool tokenizer_json_is_bpe(const fs::path& file) {
  auto j = read_json_if_exists(file);
  if (!j || !j->contains("model")) return false;
  const json& model = (*j)["model"];
  return model.value("type", std::string("BPE")) == "BPE";
}

std::vector<fs::path> tiktoken_files(const fs::path& dir) {
  std::vector<fs::path> found;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".tiktoken") found.push_back(e.path());
  std::sort(found.begin(), found.end());
  return found;
}

std::unique_ptr<Tokenizer> load_from_folder(const fs::path& dir,
                                            const TokenizerLoadOptions& options) {
  const FolderSpecials folder = read_folder_specials(dir);
  const bool has_config = fs::is_regular_file(dir / "tokenizer_config.json");
  const fs::path json_file = dir / "tokenizer.json", spm_file = dir / "tokenizer.model";
  // A SentencePiece-style tokenizer.json (Unigram) beside a tokenizer.model: use the model.
  if (fs::is_regular_file(json_file) &&
      (!fs::is_regular_file(spm_file) || tokenizer_json_is_bpe(json_file)))
    return load_tokenizer_json(json_file, folder, has_config);
  if (fs::is_regular_file(spm_file)) return load_sentencepiece(spm_file, folder);
  if (fs::is_regular_file(dir / "vocab.json") && fs::is_regular_file(dir / "merges.txt"))
    return finish_bpe(detail::bpe_spec_from_vocab_merges(
                          dir / "vocab.json", dir / "merges.txt",
                          vocab_merges_family(folder, options.tiktoken_pretokenizer)),
                      folder, has_config);
  if (auto files = tiktoken_files(dir); !files.empty()) {
    if (files.size() > 1)
      log::warn("{}: several *.tiktoken files; using {}", dir.string(), files[0].string());
    auto spec = detail::bpe_spec_from_tiktoken(files[0], options.tiktoken_pretokenizer);
    // The family's specials stand unless tokenizer_config.json names others.
    return finish_bpe(std::move(spec), folder, false);
  }
  if (fs::is_regular_file(dir / "tokenizer.bin"))
    return detail::make_llama2c_tokenizer(dir / "tokenizer.bin");
  fail_usage(
      "{}: no tokenizer found (looked for tokenizer.json, tokenizer.model, "
      "vocab.json + merges.txt, *.tiktoken, tokenizer.bin)",
      dir.string());
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const fs::path& path,
                                          const TokenizerLoadOptions& options) {
  if (!fs::exists(path)) fail_usage("tokenizer path {} does not exist", path.string());
  if (fs::is_directory(path)) return load_from_folder(path, options);
  const fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  const std::string name = path.filename().string(), ext = path.extension().string();
  if (ext == ".tiktoken") {
    return finish_bpe(detail::bpe_spec_from_tiktoken(path, options.tiktoken_pretokenizer),
                      FolderSpecials{}, false);
  }
  if (ext == ".model") return load_sentencepiece(path, read_folder_specials(dir));
  if (name == "vocab.json" || name == "merges.txt") {
    const fs::path vocab = dir / "vocab.json", merges = dir / "merges.txt";
    if (!fs::is_regular_file(vocab) || !fs::is_regular_file(merges))
      fail_usage("{}: vocab.json and merges.txt must sit side by side", path.string());
    const FolderSpecials folder = read_folder_specials(dir);
    return finish_bpe(
        detail::bpe_spec_from_vocab_merges(
            vocab, merges, vocab_merges_family(folder, options.tiktoken_pretokenizer)),
        folder, fs::is_regular_file(dir / "tokenizer_config.json"));
  }
  if (ext == ".json") {
    // A tokenizer.json on its own, or inside a model folder whose config adds BOS/EOS.
    const FolderSpecials folder =
        name == "tokenizer.json" ? read_folder_specials(dir) : FolderSpecials{};
    const bool has_config =
        name == "tokenizer.json" && fs::is_regular_file(dir / "tokenizer_config.json");
    return load_tokenizer_json(path, folder, has_config);
  }
  if (ext == ".bin") return detail::make_llama2c_tokenizer(path);
  fail_usage(
      "{}: unknown tokenizer file type (expected tokenizer.json, *.model, vocab.json, "
      "merges.txt, *.tiktoken or tokenizer.bin)",
      path.string());
}

}  // namespace ming::text
