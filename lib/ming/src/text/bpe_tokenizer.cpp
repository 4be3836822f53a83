#include "text/bpe_tokenizer.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <mutex>
#include <shared_mutex>
#include <sstream>

#include "ming/io/json.h"
#include "ming/core/error.h"
#include "text/pair_merge.h"
#include "text/unicode.h"

namespace ming::text::detail {
namespace fs = std::filesystem;

namespace {

uint64_t pair_key(TokenId a, TokenId b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

std::string regex_escape(std::string_view literal) {
  std::string out;
  for (char c : literal) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x80 && !std::isalnum(u)) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

// Splits `word` with `regex`, applying an HF SplitDelimiterBehavior.
void split_word(const std::string& word, const Regex& regex, SplitBehavior behavior, bool invert,
                std::vector<std::string>& out) {
  struct Span {
    size_t b, e;
    bool match;
  };
  std::vector<Span> spans;
  size_t last = 0;
  regex.find_all(word, [&](size_t b, size_t e) {
    if (b > last) spans.push_back({last, b, false});
    spans.push_back({b, e, true});
    last = e;
  });
  if (last < word.size()) spans.push_back({last, word.size(), false});
  if (invert)
    for (auto& s : spans) s.match = !s.match;

  std::vector<std::string> pieces;
  bool pending_prefix = false;  // merged_with_next: a match waiting for the following span
  bool last_was_match = false;
  for (const Span& s : spans) {
    std::string text = word.substr(s.b, s.e - s.b);
    switch (behavior) {
      case SplitBehavior::isolated:
        pieces.push_back(std::move(text));
        break;
      case SplitBehavior::removed:
        if (!s.match) pieces.push_back(std::move(text));
        break;
      case SplitBehavior::merged_with_previous:
        if (s.match && !pieces.empty() && !last_was_match)
          pieces.back() += text;
        else
          pieces.push_back(std::move(text));
        break;
      case SplitBehavior::merged_with_next:
        if (pending_prefix)
          pieces.back() += text;
        else
          pieces.push_back(std::move(text));
        pending_prefix = s.match;
        break;
      case SplitBehavior::contiguous:
        if (s.match && last_was_match && !pieces.empty())
          pieces.back() += text;
        else
          pieces.push_back(std::move(text));
        break;
    }
    last_was_match = s.match;
  }
  for (auto& p : pieces)
    if (!p.empty()) out.push_back(std::move(p));
}

std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
  if (from.empty()) return std::string(text);
  std::string out;
  size_t pos = 0;
  while (true) {
    const size_t hit = text.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(text.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
  out.append(text.substr(pos));
  return out;
}

class BpeTokenizer final : public Tokenizer {
 public:
  explicit BpeTokenizer(BpeSpec spec) : s_(std::move(spec)) {
    vocab_size_ = static_cast<int64_t>(s_.pieces.size());
    for (const auto& t : s_.added.all()) vocab_size_ = std::max<int64_t>(vocab_size_, t.id + 1);
    for (const auto& step : s_.pre_tokenizers)
      if (step.kind == PreTokenizerStep::Kind::byte_level) byte_level_ = true;
  }

  std::vector<TokenId> encode(std::string_view raw, bool add_bos,
                              bool parse_special) const override {
    const std::string text = sanitize_utf8(raw);
    std::vector<TokenId> ids;
    ids.reserve(text.size() / 3 + 2);
    if (add_bos && s_.bos) ids.push_back(*s_.bos);
    for (const auto& piece : s_.added.split(text, parse_special)) {
      if (piece.id >= 0) {
        ids.push_back(piece.id);
        continue;
      }
      std::vector<std::string> words;
      pre_tokenize(normalize_text(piece.text), words);
      for (const auto& w : words) encode_word(w, ids);
    }
    return ids;
  }

  std::string decode(const std::vector<TokenId>& ids, bool skip_special) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (TokenId id : ids) {
      if (const AddedToken* t = s_.added.by_id(id)) {
        if (skip_special && t->special) continue;
        tokens.push_back(t->content);
        continue;
      }
      if (id < 0 || id >= static_cast<TokenId>(s_.pieces.size()) ||
          (s_.pieces[static_cast<size_t>(id)].empty()))
        fail_usage("{}: token id {} is not in the vocabulary (size {})", s_.source, id,
                   vocab_size_);
      tokens.push_back(s_.pieces[static_cast<size_t>(id)]);
    }
    for (const auto& step : s_.decoders) apply_decoder(step, tokens);
    std::string out;
    for (const auto& t : tokens) out += t;
    return sanitize_utf8(out);
  }

  std::string piece(TokenId id) const override {
    if (const AddedToken* t = s_.added.by_id(id)) return t->content;
    if (id < 0 || id >= static_cast<TokenId>(s_.pieces.size()))
      fail_usage("{}: token id {} is not in the vocabulary (size {})", s_.source, id, vocab_size_);
    return s_.pieces[static_cast<size_t>(id)];
  }

  std::optional<TokenId> find(std::string_view piece) const override {
    if (auto id = s_.added.find(piece)) return id;
    auto it = s_.vocab.find(std::string(piece));
    if (it == s_.vocab.end()) return std::nullopt;
    return it->second;
  }

  int64_t vocab_size() const override { return vocab_size_; }
  std::optional<TokenId> bos_id() const override { return s_.bos; }
  std::vector<TokenId> eos_ids() const override { return s_.eos; }
  bool is_special(TokenId id) const override {
    const AddedToken* t = s_.added.by_id(id);
    return t && t->special;
  }

 private:
  std::string normalize_text(std::string_view text) const {
    std::string out(text);
    for (const auto& step : s_.normalizers) {
      switch (step.kind) {
        case NormalizerStep::Kind::nfc:
          out = normalize(out, NormalForm::nfc);
          break;
        case NormalizerStep::Kind::nfd:
          out = normalize(out, NormalForm::nfd);
          break;
        case NormalizerStep::Kind::nfkc:
          out = normalize(out, NormalForm::nfkc);
          break;
        case NormalizerStep::Kind::nfkd:
          out = normalize(out, NormalForm::nfkd);
          break;
        case NormalizerStep::Kind::lowercase:
          out = to_lower(out);
          break;
        case NormalizerStep::Kind::prepend:
          if (!out.empty()) out = step.text + out;
          break;
        case NormalizerStep::Kind::replace: {
          std::string replaced;
          size_t last = 0;
          step.regex->find_all(out, [&](size_t b, size_t e) {
            replaced.append(out, last, b - last);
            replaced += step.text;
            last = e;
          });
          replaced.append(out, last, std::string::npos);
          out = std::move(replaced);
          break;
        }
        case NormalizerStep::Kind::strip: {
          size_t b = 0, e = out.size();
          const auto space = [](char c) { return c == ' ' || (c >= '\t' && c <= '\r'); };
          if (step.left)
            while (b < e && space(out[b])) ++b;
          if (step.right)
            while (e > b && space(out[e - 1])) --e;
          out = out.substr(b, e - b);
          break;
        }
      }
    }
    return out;
  }

  void pre_tokenize(std::string text, std::vector<std::string>& words) const {
    if (text.empty()) return;
    std::vector<std::string> current;
    current.push_back(std::move(text));
    for (const auto& step : s_.pre_tokenizers) {
      std::vector<std::string> next;
      switch (step.kind) {
        case PreTokenizerStep::Kind::split:
          for (const auto& w : current)
            split_word(w, *step.regex, step.behavior, step.invert, next);
          break;
        case PreTokenizerStep::Kind::byte_level:
          for (auto& w : current) {
            if (step.add_prefix_space && w[0] != ' ') w.insert(w.begin(), ' ');
            if (step.regex) {
              std::vector<std::string> parts;
              split_word(w, *step.regex, SplitBehavior::isolated, false, parts);
              for (const auto& p : parts) next.push_back(bytes_to_byte_level(p));
            } else {
              next.push_back(bytes_to_byte_level(w));
            }
          }
          break;
        case PreTokenizerStep::Kind::metaspace:
          for (size_t k = 0; k < current.size(); ++k) {
            std::string w = replace_all(current[k], " ", step.replacement);
            if (step.prepend && (step.prepend_always || k == 0) &&
                w.compare(0, step.replacement.size(), step.replacement) != 0)
              w = step.replacement + w;
            if (!step.split_on_replacement) {
              next.push_back(std::move(w));
              continue;
            }
            // Each replacement starts a new word (MergedWithNext).
            size_t begin = 0;
            for (size_t pos = w.find(step.replacement, 1); pos != std::string::npos;
                 pos = w.find(step.replacement, pos + step.replacement.size())) {
              next.push_back(w.substr(begin, pos - begin));
              begin = pos;
            }
            next.push_back(w.substr(begin));
          }
          break;
      }
      current = std::move(next);
    }
    for (auto& w : current)
      if (!w.empty()) words.push_back(std::move(w));
  }

  void encode_word(const std::string& word, std::vector<TokenId>& out) const {
    {
      std::shared_lock lock(cache_mutex_);
      auto it = cache_.find(word);
      if (it != cache_.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<TokenId> ids = bpe(word);
    out.insert(out.end(), ids.begin(), ids.end());
    std::unique_lock lock(cache_mutex_);
    if (cache_.size() > 500000) cache_.clear();  // bound memory on endless streams of new words
    cache_.emplace(word, std::move(ids));
  }

  // Rank (lower merges first) and result of merging a and b, or nullopt when they don't merge.
  std::optional<std::pair<int32_t, TokenId>> merge_of(TokenId a, TokenId b) const {
    if (s_.rank_merges) {
      // Ranks are ids in a tiktoken file, so the concatenation's id is its merge priority.
      std::string joined = s_.pieces[static_cast<size_t>(a)];
      joined += s_.pieces[static_cast<size_t>(b)];
      auto it = s_.vocab.find(joined);
      if (it == s_.vocab.end()) return std::nullopt;
      return std::pair<int32_t, TokenId>{it->second, it->second};
    }
    auto it = s_.merges.find(pair_key(a, b));
    if (it == s_.merges.end()) return std::nullopt;
    return it->second;
  }

  std::vector<TokenId> bpe(const std::string& word) const {
    if (s_.ignore_merges) {
      auto it = s_.vocab.find(word);
      if (it != s_.vocab.end()) return {it->second};
    }
    // Initial symbols: one per character (per byte after the byte-level mapping).
    std::vector<TokenId> syms;
    syms.reserve(word.size());
    bool last_unk = false;
    for (size_t i = 0; i < word.size();) {
      const size_t n =
          std::min(utf8_char_len(static_cast<unsigned char>(word[i])), word.size() - i);
      const std::string ch = word.substr(i, n);
      i += n;
      if (auto it = s_.vocab.find(ch); it != s_.vocab.end()) {
        syms.push_back(it->second);
        last_unk = false;
        continue;
      }
      if (s_.byte_fallback) {
        bool all = true;
        std::vector<TokenId> bytes;
        for (unsigned char c : ch) {
          char name[8];
          std::snprintf(name, sizeof(name), "<0x%02X>", c);
          auto it = s_.vocab.find(name);
          if (it == s_.vocab.end()) {
            all = false;
            break;
          }
          bytes.push_back(it->second);
        }
        if (all) {
          syms.insert(syms.end(), bytes.begin(), bytes.end());
          last_unk = false;
          continue;
        }
      }
      if (!s_.unk)
        fail_usage("{}: character '{}' has no token and the model has no unk token", s_.source, ch);
      if (!(s_.fuse_unk && last_unk)) syms.push_back(*s_.unk);
      last_unk = true;
    }
    if (syms.size() < 2) return syms;

    // Repeatedly merge the lowest-ranked adjacent pair, leftmost first on ties.
    merge_pairs<int32_t>(syms, [this](TokenId a, TokenId b) { return merge_of(a, b); });
    return syms;
  }

  static void apply_decoder(const DecoderStep& step, std::vector<std::string>& tokens) {
    switch (step.kind) {
      case DecoderStep::Kind::byte_level: {
        // All tokens to bytes at once; a token with characters outside the table (an added token
        // such as "<|im_end|>" with a space) passes through as is, like HF's ByteLevel decoder.
        std::string bytes;
        for (const auto& t : tokens)
          if (!byte_level_to_bytes(t, bytes)) bytes += t;
        tokens.assign(1, std::move(bytes));
        break;
      }
      case DecoderStep::Kind::replace:
        for (auto& t : tokens) t = replace_all(t, step.pattern, step.content);
        break;
      case DecoderStep::Kind::byte_fallback: {
        std::vector<std::string> out;
        std::string pending;
        size_t pending_count = 0;
        const auto flush = [&] {
          if (pending_count == 0) return;
          if (is_valid_utf8(pending)) {
            out.push_back(pending);
          } else {
            std::string repl;
            for (size_t k = 0; k < pending_count; ++k) repl += "\xEF\xBF\xBD";
            out.push_back(repl);
          }
          pending.clear();
          pending_count = 0;
        };
        for (auto& t : tokens) {
          const int b = parse_byte_piece(t);
          if (b >= 0) {
            pending.push_back(static_cast<char>(b));
            ++pending_count;
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        tokens = std::move(out);
        break;
      }
      case DecoderStep::Kind::fuse: {
        std::string all;
        for (const auto& t : tokens) all += t;
        tokens.assign(1, std::move(all));
        break;
      }
      case DecoderStep::Kind::strip:
        for (auto& t : tokens) {
          size_t b = 0, e = t.size();
          for (int k = 0; k < step.start && t.compare(b, step.content.size(), step.content) == 0;
               ++k)
            b += step.content.size();
          for (int k = 0;
               k < step.stop && e >= b + step.content.size() &&
               t.compare(e - step.content.size(), step.content.size(), step.content) == 0;
               ++k)
            e -= step.content.size();
          t = t.substr(b, e - b);
        }
        break;
      case DecoderStep::Kind::metaspace:
        for (size_t k = 0; k < tokens.size(); ++k) {
          tokens[k] = replace_all(tokens[k], step.replacement, " ");
          if (k == 0 && step.prepend && !tokens[k].empty() && tokens[k][0] == ' ')
            tokens[k].erase(0, 1);
        }
        break;
    }
  }

  BpeSpec s_;
  int64_t vocab_size_ = 0;
  bool byte_level_ = false;
  mutable std::shared_mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<TokenId>> cache_;
};

// ---- tokenizer.json ----------------------------------------------------------------------------

using nlohmann::json;

std::string string_or(const json& j, const char* key, const std::string& fallback) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}
bool bool_or(const json& j, const char* key, bool fallback) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

// {"Regex": "..."} or {"String": "..."} -> compiled regex.
std::shared_ptr<const Regex> pattern_regex(const json& pattern, const std::string& where) {
  if (pattern.is_object() && pattern.contains("Regex"))
    return std::make_shared<Regex>(pattern["Regex"].get<std::string>(), where);
  if (pattern.is_object() && pattern.contains("String"))
    return std::make_shared<Regex>(regex_escape(pattern["String"].get<std::string>()), where);
  fail_usage("{}: expected {{\"Regex\": ...}} or {{\"String\": ...}}", where);
}

void parse_normalizer(const json& j, const std::string& where, std::vector<NormalizerStep>& out) {
  if (j.is_null()) return;
  const std::string type = string_or(j, "type", "");
  NormalizerStep step;
  if (type == "Sequence") {
    for (const auto& n : j.at("normalizers")) parse_normalizer(n, where, out);
    return;
  } else if (type == "NFC") {
    step.kind = NormalizerStep::Kind::nfc;
  } else if (type == "NFD") {
    step.kind = NormalizerStep::Kind::nfd;
  } else if (type == "NFKC") {
    step.kind = NormalizerStep::Kind::nfkc;
  } else if (type == "NFKD") {
    step.kind = NormalizerStep::Kind::nfkd;
  } else if (type == "Lowercase") {
    step.kind = NormalizerStep::Kind::lowercase;
  } else if (type == "Prepend") {
    step.kind = NormalizerStep::Kind::prepend;
    step.text = j.at("prepend").get<std::string>();
  } else if (type == "Replace") {
    step.kind = NormalizerStep::Kind::replace;
    step.regex = pattern_regex(j.at("pattern"), where + " Replace pattern");
    step.text = j.at("content").get<std::string>();
  } else if (type == "Strip") {
    step.kind = NormalizerStep::Kind::strip;
    step.left = bool_or(j, "strip_left", true);
    step.right = bool_or(j, "strip_right", true);
  } else {
    fail_usage(
        "{}: normalizer type '{}' is not supported (supported: Sequence, NFC, NFD, NFKC, "
        "NFKD, Lowercase, Prepend, Replace, Strip)",
        where, type);
  }
  out.push_back(std::move(step));
}

SplitBehavior parse_behavior(const std::string& name, const std::string& where) {
  if (name == "Isolated") return SplitBehavior::isolated;
  if (name == "Removed") return SplitBehavior::removed;
  if (name == "MergedWithPrevious") return SplitBehavior::merged_with_previous;
  if (name == "MergedWithNext") return SplitBehavior::merged_with_next;
  if (name == "Contiguous") return SplitBehavior::contiguous;
  fail_usage("{}: unknown split behavior '{}'", where, name);
}

void parse_pre_tokenizer(const json& j, const std::string& where,
                         std::vector<PreTokenizerStep>& out) {
  if (j.is_null()) return;
  const std::string type = string_or(j, "type", "");
  PreTokenizerStep step;
  if (type == "Sequence") {
    for (const auto& p : j.at("pretokenizers")) parse_pre_tokenizer(p, where, out);
    return;
  } else if (type == "Split") {
    step.kind = PreTokenizerStep::Kind::split;
    step.regex = pattern_regex(j.at("pattern"), where + " Split pattern");
    step.behavior = parse_behavior(string_or(j, "behavior", "Isolated"), where);
    step.invert = bool_or(j, "invert", false);
  } else if (type == "ByteLevel") {
    step.kind = PreTokenizerStep::Kind::byte_level;
    step.add_prefix_space = bool_or(j, "add_prefix_space", true);
    if (bool_or(j, "use_regex", true))
      step.regex = std::make_shared<Regex>(kGpt2Pattern, where + " ByteLevel");
  } else if (type == "Metaspace") {
    step.kind = PreTokenizerStep::Kind::metaspace;
    step.replacement = string_or(j, "replacement", "\xE2\x96\x81");
    const std::string scheme =
        string_or(j, "prepend_scheme", bool_or(j, "add_prefix_space", true) ? "always" : "never");
    step.prepend = scheme != "never";
    step.prepend_always = scheme == "always";
    step.split_on_replacement = bool_or(j, "split", true);
  } else if (type == "Digits") {
    step.regex = std::make_shared<Regex>(
        bool_or(j, "individual_digits", false) ? "\\p{N}" : "\\p{N}+", where + " Digits");
  } else if (type == "WhitespaceSplit") {
    step.regex = std::make_shared<Regex>("\\s+", where + " WhitespaceSplit");
    step.behavior = SplitBehavior::removed;
  } else if (type == "Whitespace") {
    step.regex = std::make_shared<Regex>("\\w+|[^\\w\\s]+", where + " Whitespace");
    step.behavior = SplitBehavior::removed;
    step.invert = true;
  } else {
    fail_usage(
        "{}: pre_tokenizer type '{}' is not supported (supported: Sequence, Split, "
        "ByteLevel, Metaspace, Digits, Whitespace, WhitespaceSplit)",
        where, type);
  }
  out.push_back(std::move(step));
}

void parse_decoder(const json& j, const std::string& where, std::vector<DecoderStep>& out) {
  if (j.is_null()) return;
  const std::string type = string_or(j, "type", "");
  DecoderStep step;
  if (type == "Sequence") {
    for (const auto& d : j.at("decoders")) parse_decoder(d, where, out);
    return;
  } else if (type == "ByteLevel") {
    step.kind = DecoderStep::Kind::byte_level;
  } else if (type == "Replace") {
    step.kind = DecoderStep::Kind::replace;
    const json& p = j.at("pattern");
    if (!p.contains("String"))
      fail_usage("{}: Replace decoder supports only String patterns", where);
    step.pattern = p["String"].get<std::string>();
    step.content = j.at("content").get<std::string>();
  } else if (type == "ByteFallback") {
    step.kind = DecoderStep::Kind::byte_fallback;
  } else if (type == "Fuse") {
    step.kind = DecoderStep::Kind::fuse;
  } else if (type == "Strip") {
    step.kind = DecoderStep::Kind::strip;
    step.content = j.at("content").get<std::string>();
    step.start = j.value("start", 0);
    step.stop = j.value("stop", 0);
  } else if (type == "Metaspace") {
    step.kind = DecoderStep::Kind::metaspace;
    step.replacement = string_or(j, "replacement", "\xE2\x96\x81");
    step.prepend = string_or(j, "prepend_scheme",
                             bool_or(j, "add_prefix_space", true) ? "always" : "never") != "never";
  } else {
    fail_usage(
        "{}: decoder type '{}' is not supported (supported: Sequence, ByteLevel, Replace, "
        "ByteFallback, Fuse, Strip, Metaspace)",
        where, type);
  }
  out.push_back(std::move(step));
}

constexpr TokenId kMaxVocabularyIds = 1 << 24;

// Real tokenizers list more merges than pieces (duplicates, and merges of pieces also reached
// another way: Gemma-3 has 514,906 for 262,144 pieces); a bound per piece still refuses a hostile
// merge list before reading it all.
constexpr size_t kMergesPerPiece = 4;
size_t max_merges(const BpeSpec& spec) {
  return kMergesPerPiece * spec.pieces.size();
}

void add_merge(BpeSpec& spec, const std::string& left, const std::string& right, int32_t rank,
               const std::string& where) {
  auto a = spec.vocab.find(left), b = spec.vocab.find(right), m = spec.vocab.find(left + right);
  if (a == spec.vocab.end() || b == spec.vocab.end() || m == spec.vocab.end())
    fail_usage("{}: merge {} '{} {}' uses a piece missing from the vocabulary", where, rank, left,
               right);
  spec.merges.emplace(pair_key(a->second, b->second), std::make_pair(rank, m->second));
}

void set_vocab(BpeSpec& spec, std::unordered_map<std::string, TokenId> vocab) {
  TokenId max_id = -1;
  for (const auto& [piece, id] : vocab) max_id = std::max(max_id, id);
  // Ids index a table: a hostile id must not make it huge (real vocabularies: < 300k).
  if (max_id >= kMaxVocabularyIds)
    fail_usage("{}: token id {} is past the {} ids a vocabulary may have", spec.source, max_id,
               kMaxVocabularyIds);
  spec.pieces.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& [piece, id] : vocab) spec.pieces[static_cast<size_t>(id)] = piece;
  spec.vocab = std::move(vocab);
}

std::unordered_map<std::string, TokenId> parse_vocab_object(const json& j,
                                                            const std::string& where) {
  if (!j.is_object()) fail_usage("{}: vocab must be an object of piece -> id", where);
  std::unordered_map<std::string, TokenId> vocab;
  vocab.reserve(j.size());
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() >= kMaxVocabularyIds)
      fail_usage("{}: vocab entry '{}' must map to an integer id in [0, {})", where, it.key(),
                 kMaxVocabularyIds);
    vocab.emplace(it.key(), it.value().get<TokenId>());
  }
  return vocab;
}

}  // namespace

std::unique_ptr<Tokenizer> make_bpe_tokenizer(BpeSpec spec) {
  return std::make_unique<BpeTokenizer>(std::move(spec));
}

BpeSpec bpe_spec_from_tokenizer_json(const json& j, const fs::path& path) {
  const std::string where = path.string();
  BpeSpec spec;
  spec.source = where;
  try {
    const json& model = j.at("model");
    const std::string type = string_or(model, "type", "BPE");
    if (type != "BPE")
      fail_usage(
          "{}: model type '{}' is not supported here (only BPE; for SentencePiece models "
          "load tokenizer.model)",
          where, type);
    if (!string_or(model, "continuing_subword_prefix", "").empty() ||
        !string_or(model, "end_of_word_suffix", "").empty())
      fail_usage("{}: BPE continuing_subword_prefix / end_of_word_suffix are not supported", where);
    set_vocab(spec, parse_vocab_object(model.at("vocab"), where + " model.vocab"));
    spec.byte_fallback = bool_or(model, "byte_fallback", false);
    spec.ignore_merges = bool_or(model, "ignore_merges", false);
    spec.fuse_unk = bool_or(model, "fuse_unk", false);
    if (auto unk = model.find("unk_token"); unk != model.end() && unk->is_string()) {
      auto it = spec.vocab.find(unk->get<std::string>());
      if (it != spec.vocab.end()) spec.unk = it->second;
    }
    const json& merges = model.at("merges");
    if (merges.size() > max_merges(spec))
      fail_usage("{}: {} merges for {} vocabulary pieces (at most {} per piece)", where,
                 merges.size(), spec.pieces.size(), kMergesPerPiece);
    int32_t rank = 0;
    for (const auto& m : merges) {
      if (m.is_string()) {
        const std::string line = m.get<std::string>();
        const size_t space = line.find(' ', 1);
        if (space == std::string::npos)
          fail_usage("{}: merge {} '{}' is not 'left right'", where, rank, line);
        add_merge(spec, line.substr(0, space), line.substr(space + 1), rank, where);
      } else if (m.is_array() && m.size() == 2) {
        add_merge(spec, m[0].get<std::string>(), m[1].get<std::string>(), rank, where);
      } else {
        fail_usage("{}: merge {} must be a string or a pair of strings", where, rank);
      }
      ++rank;
    }
    if (auto added = j.find("added_tokens"); added != j.end() && added->is_array()) {
      for (const auto& t : *added) {
        AddedToken token;
        token.id = t.at("id").get<TokenId>();
        token.content = t.at("content").get<std::string>();
        token.special = bool_or(t, "special", false);
        token.lstrip = bool_or(t, "lstrip", false);
        token.rstrip = bool_or(t, "rstrip", false);
        spec.added.add(token);
      }
    }
    if (auto n = j.find("normalizer"); n != j.end())
      parse_normalizer(*n, where + " normalizer", spec.normalizers);
    if (auto p = j.find("pre_tokenizer"); p != j.end())
      parse_pre_tokenizer(*p, where + " pre_tokenizer", spec.pre_tokenizers);
    if (auto d = j.find("decoder"); d != j.end())
      parse_decoder(*d, where + " decoder", spec.decoders);
  } catch (const json::exception& e) {
    fail_usage("{}: malformed tokenizer.json: {}", where, e.what());
  }
  return spec;
}

void set_family_pipeline(BpeSpec& spec, Pretokenizer pretokenizer) {
  const char* pattern = kGpt2Pattern;
  if (pretokenizer == Pretokenizer::qwen2) pattern = kQwen2Pattern;
  if (pretokenizer == Pretokenizer::llama3) pattern = kLlama3Pattern;
  spec.normalizers.clear();
  // Qwen normalises to NFC before splitting (tokenizer.json "NFC"; tokenization_qwen.py).
  if (pretokenizer == Pretokenizer::qwen2) {
    NormalizerStep nfc;
    nfc.kind = NormalizerStep::Kind::nfc;
    spec.normalizers.push_back(nfc);
  }
  PreTokenizerStep split;
  split.kind = PreTokenizerStep::Kind::split;
  split.regex = std::make_shared<Regex>(pattern, "pre-tokenizer");
  PreTokenizerStep byte_level;
  byte_level.kind = PreTokenizerStep::Kind::byte_level;
  spec.pre_tokenizers = {split, byte_level};
  spec.decoders = {DecoderStep{}};  // ByteLevel
}

void add_family_specials(BpeSpec& spec, Pretokenizer pretokenizer, TokenId first_id) {
  std::vector<std::string> names;
  switch (pretokenizer) {
    case Pretokenizer::qwen2:
      // tokenization_qwen.py: ENDOFTEXT, IMSTART, IMEND, then <|extra_0|> .. <|extra_204|>.
      names = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
      for (int i = 0; i < 205; ++i) names.push_back(fmt::format("<|extra_{}|>", i));
      break;
    case Pretokenizer::llama3:
      // Meta's llama3 tokenizer.py: 256 reserved specials after the 128000 ranks.
      names = {"<|begin_of_text|>",
               "<|end_of_text|>",
               "<|reserved_special_token_0|>",
               "<|reserved_special_token_1|>",
               "<|reserved_special_token_2|>",
               "<|reserved_special_token_3|>",
               "<|start_header_id|>",
               "<|end_header_id|>",
               "<|reserved_special_token_4|>",
               "<|eot_id|>"};
      for (int i = 5; i < 256 - 5; ++i)
        names.push_back(fmt::format("<|reserved_special_token_{}|>", i));
      break;
    case Pretokenizer::gpt2:
      names = {"<|endoftext|>"};
      break;
  }
  for (size_t i = 0; i < names.size(); ++i)
    spec.added.add({names[i], first_id + static_cast<TokenId>(i), true, false, false});
  spec.bos.reset();
  spec.eos.clear();
  const auto id = [&](const char* name) { return *spec.added.find(name); };
  if (pretokenizer == Pretokenizer::qwen2) spec.eos = {id("<|endoftext|>"), id("<|im_end|>")};
  if (pretokenizer == Pretokenizer::llama3) {
    spec.bos = id("<|begin_of_text|>");
    spec.eos = {id("<|end_of_text|>"), id("<|eot_id|>")};
  }
  if (pretokenizer == Pretokenizer::gpt2) spec.eos = {id("<|endoftext|>")};
}

BpeSpec bpe_spec_from_vocab_merges(const fs::path& vocab_path, const fs::path& merges_path,
                                   Pretokenizer pretokenizer) {
  BpeSpec spec;
  spec.source = vocab_path.string();
  const json vj = io::read_json(vocab_path);
  set_vocab(spec, parse_vocab_object(vj, vocab_path.string()));
  std::ifstream min(merges_path);
  if (!min) fail_usage("cannot read {}", merges_path.string());
  std::string line;
  int32_t rank = 0;
  size_t line_no = 0;
  while (std::getline(min, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    // Checked as the lines come: a hostile file is refused after reading no more than this.
    if (static_cast<size_t>(rank) >= max_merges(spec))
      fail_usage("{}:{}: more merges than {} per each of the {} vocabulary pieces",
                 merges_path.string(), line_no, kMergesPerPiece, spec.pieces.size());
    const size_t space = line.find(' ', 1);
    if (space == std::string::npos)
      fail_usage("{}:{}: expected 'left right', got '{}'", merges_path.string(), line_no, line);
    add_merge(spec, line.substr(0, space), line.substr(space + 1), rank++,
              fmt::format("{}:{}", merges_path.string(), line_no));
  }
  set_family_pipeline(spec, pretokenizer);
  return spec;
}

BpeSpec bpe_spec_from_tiktoken(const fs::path& path, Pretokenizer pretokenizer) {
  static const auto decode_table = [] {
    std::array<int, 256> t{};
    t.fill(-1);
    const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(alphabet[i])] = i;
    return t;
  }();
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_usage("cannot read {}", path.string());
  BpeSpec spec;
  spec.source = path.string();
  spec.rank_merges = true;
  spec.ignore_merges = true;  // tiktoken returns a whole piece that is itself a token
  std::unordered_map<std::string, TokenId> vocab;
  vocab.reserve(160000);
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos)
      fail_usage("{}:{}: expected '<base64 token> <rank>'", path.string(), line_no);
    std::string bytes;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < space; ++i) {
      const char c = line[i];
      if (c == '=') break;
      const int v = decode_table[static_cast<unsigned char>(c)];
      if (v < 0) fail_usage("{}:{}: invalid base64 character '{}'", path.string(), line_no, c);
      acc = (acc << 6) | static_cast<uint32_t>(v);
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        bytes.push_back(static_cast<char>((acc >> bits) & 0xFF));
      }
    }
    TokenId rank = 0;
    try {
      size_t used = 0;
      rank = std::stoi(line.substr(space + 1), &used);
      if (rank < 0) throw std::invalid_argument("negative");
    } catch (const std::exception&) {
      fail_usage("{}:{}: rank '{}' is not a non-negative integer", path.string(), line_no,
                 line.substr(space + 1));
    }
    if (bytes.empty()) fail_usage("{}:{}: empty token", path.string(), line_no);
    vocab.emplace(bytes_to_byte_level(bytes), rank);
  }
  if (vocab.size() < 256)
    fail_usage("{}: {} ranks; a byte-level rank file needs at least the 256 single bytes",
               path.string(), vocab.size());
  set_vocab(spec, std::move(vocab));
  set_family_pipeline(spec, pretokenizer);
  add_family_specials(spec, pretokenizer, static_cast<TokenId>(spec.pieces.size()));
  return spec;
}

}  // namespace ming::text::detail
