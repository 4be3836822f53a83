// SentencePiece models (LLaMA-2's tokenizer.model, or one made by spm_train) via libsentencepiece.
//
// libsentencepiece has no notion of special tokens written in text: "<s>" is spelled out as
// characters. Hugging Face's LLaMA tokenizers split the text on the control pieces first and
// encode each chunk on its own (legacy behaviour: every chunk gets the dummy-prefix space), which
// is what encode() does here when parse_special is on.
//
// Why dlopen: Debian's libsentencepiece embeds its own protobuf and exports its symbols, while
// libtorch pulls in the system libprotobuf. With both in the global symbol scope each binds to
// the other's protobuf and every process that loads the two crashes during static
// initialisation. So libming does not link libsentencepiece; it is loaded on first use with
// RTLD_LOCAL (its symbols stay out of the global scope) and RTLD_DEEPBIND (it binds to its own
// protobuf first). The class is used through its virtual functions only; the three non-virtual
// functions needed come from dlsym, so libming has no link-time reference into the library.
#include <dlfcn.h>
#include <sentencepiece_processor.h>

#include <algorithm>
#include <new>

#include "ming/core/error.h"
#include "text/factories.h"
#include "text/unicode.h"

namespace ming::text::detail {
namespace {

using sentencepiece::SentencePieceProcessor;
using sentencepiece::util::Status;

struct SpmLibrary {
  void (*construct)(void*) = nullptr;                    // SentencePieceProcessor()
  void (*destroy_status)(void*) = nullptr;               // util::Status::~Status()
  const char* (*status_message)(const void*) = nullptr;  // util::Status::error_message()
  std::string error;
};

const SpmLibrary& spm_library() {
  static const SpmLibrary lib = [] {
    SpmLibrary l;
    void* handle = dlopen("libsentencepiece.so.0", RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!handle) {
      l.error = dlerror();
      return l;
    }
    l.construct = reinterpret_cast<void (*)(void*)>(
        dlsym(handle, "_ZN13sentencepiece22SentencePieceProcessorC1Ev"));
    l.destroy_status =
        reinterpret_cast<void (*)(void*)>(dlsym(handle, "_ZN13sentencepiece4util6StatusD1Ev"));
    l.status_message = reinterpret_cast<const char* (*)(const void*)>(
        dlsym(handle, "_ZNK13sentencepiece4util6Status13error_messageEv"));
    if (!l.construct || !l.destroy_status || !l.status_message)
      l.error = "libsentencepiece.so.0 lacks the expected C++ symbols (version mismatch?)";
    return l;  // the handle stays open for the life of the process
  }();
  return lib;
}

// Runs a libsentencepiece call returning util::Status and throws on failure. The Status is
// built in place (guaranteed copy elision) and destroyed through the library, so no Status
// symbol is referenced at link time.
template <typename Call>
void check(Call&& call, const std::string& what) {
  alignas(Status) unsigned char storage[sizeof(Status)];
  const Status* status = new (storage) Status(call());
  if (status->ok()) return;  // an ok Status owns nothing
  const std::string message = spm_library().status_message(status);
  spm_library().destroy_status(storage);
  fail_usage("{}: {}", what, message);
}

// Owns one SentencePieceProcessor made by the privately loaded library.
class Processor {
 public:
  Processor() {
    const SpmLibrary& lib = spm_library();
    if (!lib.error.empty())
      fail("SentencePiece models need libsentencepiece.so.0 (Debian package libsentencepiece0): {}",
           lib.error);
    void* memory = ::operator new(sizeof(SentencePieceProcessor));
    lib.construct(memory);
    p_ = static_cast<SentencePieceProcessor*>(memory);
  }
  ~Processor() { delete p_; }  // virtual destructor: dispatched into the library
  Processor(const Processor&) = delete;
  Processor& operator=(const Processor&) = delete;
  SentencePieceProcessor* operator->() const { return p_; }

 private:
  SentencePieceProcessor* p_ = nullptr;
};

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::filesystem::path& path, const AddedTokens& extra,
                         std::optional<TokenId> bos_override, std::vector<TokenId> extra_eos)
      : path_(path.string()) {
    check([&] { return sp_->Load(path_); }, path_ + ": not a loadable SentencePiece model");
    pieces_ = sp_->GetPieceSize();
    for (int id = 0; id < pieces_; ++id) {
      if (sp_->IsControl(id) || sp_->IsUnknown(id))
        added_.add({sp_->IdToPiece(id), id, /*special=*/true, false, false});
    }
    for (const auto& t : extra.all()) {
      if (t.id < pieces_ && !(sp_->IsControl(t.id) || sp_->IsUnknown(t.id)) &&
          sp_->IdToPiece(t.id) == t.content)
        continue;  // an ordinary or user-defined piece: SentencePiece matches those itself
      added_.add(t);
    }
    vocab_size_ = pieces_;
    for (const auto& t : added_.all()) vocab_size_ = std::max<int64_t>(vocab_size_, t.id + 1);
    if (bos_override) {
      bos_ = bos_override;
    } else if (sp_->bos_id() >= 0) {
      bos_ = sp_->bos_id();
    }
    if (sp_->eos_id() >= 0) eos_.push_back(sp_->eos_id());
    for (TokenId id : extra_eos)
      if (std::find(eos_.begin(), eos_.end(), id) == eos_.end()) eos_.push_back(id);
  }

  std::vector<TokenId> encode(std::string_view raw, bool add_bos,
                              bool parse_special) const override {
    const std::string text = sanitize_utf8(raw);
    std::vector<TokenId> ids;
    if (add_bos && bos_) ids.push_back(*bos_);
    std::vector<int> chunk;
    for (const auto& piece : added_.split(text, parse_special)) {
      if (piece.id >= 0) {
        ids.push_back(piece.id);
        continue;
      }
      check([&] { return sp_->Encode(piece.text, &chunk); },
            path_ + ": SentencePiece encode failed");
      ids.insert(ids.end(), chunk.begin(), chunk.end());
    }
    return ids;
  }

  std::string decode(const std::vector<TokenId>& ids, bool skip_special) const override {
    std::string out, part;
    std::vector<int> run;
    const auto flush = [&] {
      if (run.empty()) return;
      check([&] { return sp_->Decode(run, &part); }, path_ + ": SentencePiece decode failed");
      out += part;
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
    return sp_->IdToPiece(id);
  }

  std::optional<TokenId> find(std::string_view piece) const override {
    if (auto id = added_.find(piece)) return id;
    const int id = sp_->PieceToId(piece);
    // PieceToId answers unk_id for unknown pieces; only a real match counts.
    if (id >= 0 && id < pieces_ && sp_->IdToPiece(id) == piece) return id;
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
