// A compiled PCRE2 pattern (UTF + Unicode properties) for pre-tokenizer splitting. std::regex has
// no \p{L}; PCRE2 matches what the Rust regex engines of tiktoken / HF tokenizers accept for the
// GPT-2, LLaMA-3 and Qwen2 patterns (look-ahead included).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace ming::text::detail {

class Regex {
 public:
  // Throws UsageError naming `what` and the offset when the pattern does not compile.
  Regex(const std::string& pattern, const std::string& what);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Calls `on_match(begin, end)` for each successive non-overlapping match in `text` (which must
  // be valid UTF-8). Thread-safe.
  void find_all(std::string_view text, const std::function<void(size_t, size_t)>& on_match) const;
  const std::string& pattern() const { return pattern_; }

 private:
  struct Impl;
  std::string pattern_;
  std::unique_ptr<Impl> impl_;
};

// The pre-tokenizer patterns of the model families MING knows.
extern const char* const kGpt2Pattern;
extern const char* const kLlama3Pattern;
extern const char* const kQwen2Pattern;

}  // namespace ming::text::detail
