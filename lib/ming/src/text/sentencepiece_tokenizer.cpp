// SentencePiece models (LLaMA-2's tokenizer.model, or one made by spm_train) via libsentencepiece.
//
// libsentencepiece has no notion of special tokens written in text: "<s>" is spelled out as
// characters. Hugging Face's LLaMA tokenizers split the text on the control pieces first and
// encode each chunk on its own (legacy behaviour: every chunk gets the dummy-prefix space), which
// is what encode() does here when parse_special is on.
//
// Why a bridge in its own link namespace: Debian's libsentencepiece embeds its own protobuf and
// exports its symbols, while libtorch pulls in the system libprotobuf; with both in one symbol
// scope each binds to the other's protobuf and the process crashes during static
// initialisation. libming therefore never links libsentencepiece. On first use it dlmopen()s
// libming-sentencepiece.so (lib/sentencepiece-bridge, installed beside libming) into a new link
// namespace, which pulls libsentencepiece in there, away from libtorch. Unlike RTLD_DEEPBIND
// (refused by the sanitizer runtimes) this works in ASan/UBSan builds too, and the bridge's plain
// C interface means no C++ object, allocation or exception crosses between the namespaces.
#include <dlfcn.h>
#include <link.h>

#include <algorithm>
#include <vector>

#include "ming/core/error.h"
#include "sentencepiece-bridge/bridge.h"
#include "text/factories.h"
#include "text/unicode.h"

namespace ming::text::detail {
namespace {

constexpr const char* kBridgeName = "libming-sentencepiece.so";

struct SpmBridge {
  decltype(&ming_spm_load) load = nullptr;
  decltype(&ming_spm_free) free = nullptr;
  decltype(&ming_spm_piece_size) piece_size = nullptr;
  decltype(&ming_spm_is_control) is_control = nullptr;
  decltype(&ming_spm_is_unknown) is_unknown = nullptr;
  decltype(&ming_spm_bos_id) bos_id = nullptr;
  decltype(&ming_spm_eos_id) eos_id = nullptr;
  decltype(&ming_spm_piece_to_id) piece_to_id = nullptr;
  decltype(&ming_spm_id_to_piece) id_to_piece = nullptr;
  decltype(&ming_spm_encode) encode = nullptr;
  decltype(&ming_spm_decode) decode = nullptr;
  std::string error;
};

// The bridge lives in the folder of libming itself (build tree and install alike).
std::string bridge_path() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&bridge_path), &info) && info.dli_fname) {
    std::string self = info.dli_fname;
    const auto slash = self.rfind('/');
    if (slash != std::string::npos) return self.substr(0, slash + 1) + kBridgeName;
  }
  return kBridgeName;
}

const SpmBridge& spm_bridge() {
  static const SpmBridge bridge = [] {
    SpmBridge b;
    const std::string path = bridge_path();
    void* handle = dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      b.error = dlerror();
      return b;
    }
    bool complete = true;
    const auto bind = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(handle, name));
      complete = complete && fn;
    };
    bind(b.load, "ming_spm_load");
    bind(b.free, "ming_spm_free");
    bind(b.piece_size, "ming_spm_piece_size");
    bind(b.is_control, "ming_spm_is_control");
    bind(b.is_unknown, "ming_spm_is_unknown");
    bind(b.bos_id, "ming_spm_bos_id");
    bind(b.eos_id, "ming_spm_eos_id");
    bind(b.piece_to_id, "ming_spm_piece_to_id");
    bind(b.id_to_piece, "ming_spm_id_to_piece");
    bind(b.encode, "ming_spm_encode");
    bind(b.decode, "ming_spm_decode");
    if (!complete) b.error = path + " lacks the bridge's functions (a stale build?)";
    return b;  // the namespace stays loaded for the life of the process
  }();
  return bridge;
}

// Calls `fill(buffer, capacity)`, which returns the full size (or -1 with a message in `error`),
// again with a larger buffer while the first was too small.
template <typename T, typename Fill>
std::vector<T> fetch(size_t guess, const std::string& what, Fill&& fill) {
  std::vector<T> out(std::max<size_t>(guess, 1));
  char error[512] = "";
  for (;;) {
    const long n = fill(out.data(), out.size(), error, sizeof error);
    if (n < 0) fail_usage("{}: {}", what, error);
    if (static_cast<size_t>(n) <= out.size()) {
      out.resize(static_cast<size_t>(n));
      return out;
    }
    out.resize(static_cast<size_t>(n));
  }
}

// Owns one SentencePieceProcessor of the bridge.
class Processor {
 public:
  explicit Processor(const std::string& path) {
    const SpmBridge& bridge = spm_bridge();
    if (!bridge.error.empty())
      fail(
          "SentencePiece models need {} and libsentencepiece.so.0 (Debian package "
          "libsentencepiece0): {}",
          kBridgeName, bridge.error);
    char error[512] = "";
    p_ = bridge.load(path.c_str(), error, sizeof error);
    if (!p_) fail_usage("{}: not a loadable SentencePiece model: {}", path, error);
  }
  ~Processor() { spm_bridge().free(p_); }
  Processor(const Processor&) = delete;
  Processor& operator=(const Processor&) = delete;

  int piece_size() const { return spm_bridge().piece_size(p_); }
  bool is_control(int id) const { return spm_bridge().is_control(p_, id); }
  bool is_unknown(int id) const { return spm_bridge().is_unknown(p_, id); }
  int bos_id() const { return spm_bridge().bos_id(p_); }
  int eos_id() const { return spm_bridge().eos_id(p_); }
  int piece_to_id(std::string_view piece) const {
    return spm_bridge().piece_to_id(p_, piece.data(), piece.size());
  }
  std::string id_to_piece(int id) const {
    std::string piece(32, '\0');
    size_t n = spm_bridge().id_to_piece(p_, id, piece.data(), piece.size());
    if (n > piece.size()) {
      piece.resize(n);
      n = spm_bridge().id_to_piece(p_, id, piece.data(), piece.size());
    }
    piece.resize(n);
    return piece;
  }
  std::vector<int> encode(std::string_view text, const std::string& what) const {
    return fetch<int>(text.size() + 2, what, [&](int* out, size_t cap, char* err, size_t errcap) {
      return spm_bridge().encode(p_, text.data(), text.size(), out, cap, err, errcap);
    });
  }
  std::string decode(const std::vector<int>& ids, const std::string& what) const {
    const auto bytes =
        fetch<char>(ids.size() * 8, what, [&](char* out, size_t cap, char* err, size_t errcap) {
          return spm_bridge().decode(p_, ids.data(), ids.size(), out, cap, err, errcap);
        });
    return std::string(bytes.begin(), bytes.end());
  }

 private:
  MingSpm* p_ = nullptr;
};

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::filesystem::path& path, const AddedTokens& extra,
                         std::optional<TokenId> bos_override, std::vector<TokenId> extra_eos)
      : path_(path.string()), sp_(path_) {
    pieces_ = sp_.piece_size();
    for (int id = 0; id < pieces_; ++id) {
      if (sp_.is_control(id) || sp_.is_unknown(id))
        added_.add({sp_.id_to_piece(id), id, /*special=*/true, false, false});
    }
    for (const auto& t : extra.all()) {
      if (t.id < pieces_ && !(sp_.is_control(t.id) || sp_.is_unknown(t.id)) &&
          sp_.id_to_piece(t.id) == t.content)
        continue;  // an ordinary or user-defined piece: SentencePiece matches those itself
      added_.add(t);
    }
    vocab_size_ = pieces_;
    for (const auto& t : added_.all()) vocab_size_ = std::max<int64_t>(vocab_size_, t.id + 1);
    if (bos_override) {
      bos_ = bos_override;
    } else if (sp_.bos_id() >= 0) {
      bos_ = sp_.bos_id();
    }
    if (sp_.eos_id() >= 0) eos_.push_back(sp_.eos_id());
    for (TokenId id : extra_eos)
      if (std::find(eos_.begin(), eos_.end(), id) == eos_.end()) eos_.push_back(id);
  }

  std::vector<TokenId> encode(std::string_view raw, bool add_bos,
                              bool parse_special) const override {
    const std::string text = sanitize_utf8(raw);
    std::vector<TokenId> ids;
    if (add_bos && bos_) ids.push_back(*bos_);
    for (const auto& piece : added_.split(text, parse_special)) {
      if (piece.id >= 0) {
        ids.push_back(piece.id);
        continue;
      }
      const std::vector<int> chunk =
          sp_.encode(piece.text, path_ + ": SentencePiece encode failed");
      ids.insert(ids.end(), chunk.begin(), chunk.end());
    }
    return ids;
  }

  std::string decode(const std::vector<TokenId>& ids, bool skip_special) const override {
    std::string out;
    std::vector<int> run;
    const auto flush = [&] {
      if (run.empty()) return;
      out += sp_.decode(run, path_ + ": SentencePiece decode failed");
      run.clear();
    };
    for (TokenId id : ids) {
      if (id < 0 || id >= vocab_size_)
        fail_usage("{}: token id {} is not in the vocabulary (size {})", path_, id, vocab_size_);
      const AddedToken* t = added_.by_id(id);
      if (!t) {
        run.push_back(id);
        continue;
      }
      if (skip_special && t->special) continue;  // skipped ids don't split the run
      // Each chunk between special tokens was encoded with its own dummy prefix; decoding the
      // chunks separately removes exactly those prefixes again.
      flush();
      out += t->content;
    }
    flush();
    return sanitize_utf8(out);
  }

  std::string piece(TokenId id) const override {
    if (const AddedToken* t = added_.by_id(id); t && id >= pieces_) return t->content;
    if (id < 0 || id >= pieces_)
      fail_usage("{}: token id {} is not in the vocabulary (size {})", path_, id, vocab_size_);
    return sp_.id_to_piece(id);
  }

  std::optional<TokenId> find(std::string_view piece) const override {
    if (auto id = added_.find(piece)) return id;
    const int id = sp_.piece_to_id(piece);
    // PieceToId answers unk_id for unknown pieces; only a real match counts.
    if (id >= 0 && id < pieces_ && sp_.id_to_piece(id) == piece) return id;
    return std::nullopt;
  }

  int64_t vocab_size() const override { return vocab_size_; }
  std::optional<TokenId> bos_id() const override { return bos_; }
  std::vector<TokenId> eos_ids() const override { return eos_; }
  bool is_special(TokenId id) const override {
    const AddedToken* t = added_.by_id(id);
    return t && t->special;
  }

 private:
  std::string path_;
  Processor sp_;
  int pieces_ = 0;
  int64_t vocab_size_ = 0;
  AddedTokens added_;
  std::optional<TokenId> bos_;
  std::vector<TokenId> eos_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::filesystem::path& path,
                                                        const AddedTokens& extra,
                                                        std::optional<TokenId> bos_override,
                                                        std::vector<TokenId> extra_eos) {
  return std::make_unique<SentencePieceTokenizer>(path, extra, bos_override, std::move(extra_eos));
}

}  // namespace ming::text::detail
