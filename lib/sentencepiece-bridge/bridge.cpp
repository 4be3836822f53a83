// libming-sentencepiece.so: SentencePieceProcessor behind the plain C interface of bridge.h.
// Built without sanitizers or fuzzer instrumentation: it runs in a link namespace of its own,
// where the sanitizer runtime of the main program does not exist.
#include "bridge.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

struct MingSpm {
  sentencepiece::SentencePieceProcessor processor;
};

namespace {

void copy_message(const std::string& message, char* error, size_t capacity) {
  if (capacity == 0) return;
  const size_t n = std::min(message.size(), capacity - 1);
  std::memcpy(error, message.data(), n);
  error[n] = '\0';
}

template <typename T>
long copy_out(const T* data, size_t count, T* out, size_t capacity) {
  std::copy(data, data + std::min(count, capacity), out);
  return static_cast<long>(count);
}

}  // namespace

extern "C" {

MingSpm* ming_spm_load(const char* path, char* error, size_t error_capacity) {
  try {
    auto* spm = new MingSpm;
    const auto status = spm->processor.Load(path);
    if (status.ok()) return spm;
    copy_message(status.error_message(), error, error_capacity);
    delete spm;
  } catch (const std::exception& e) {
    copy_message(e.what(), error, error_capacity);
  }
  return nullptr;
}

void ming_spm_free(MingSpm* spm) {
  delete spm;
}

int ming_spm_piece_size(const MingSpm* spm) {
  return spm->processor.GetPieceSize();
}
int ming_spm_is_control(const MingSpm* spm, int id) {
  return spm->processor.IsControl(id);
}
int ming_spm_is_unknown(const MingSpm* spm, int id) {
  return spm->processor.IsUnknown(id);
}
int ming_spm_bos_id(const MingSpm* spm) {
  return spm->processor.bos_id();
}
int ming_spm_eos_id(const MingSpm* spm) {
  return spm->processor.eos_id();
}

int ming_spm_piece_to_id(const MingSpm* spm, const char* piece, size_t size) {
  return spm->processor.PieceToId(std::string_view(piece, size));
}

size_t ming_spm_id_to_piece(const MingSpm* spm, int id, char* out, size_t capacity) {
  const std::string& piece = spm->processor.IdToPiece(id);
  return static_cast<size_t>(copy_out(piece.data(), piece.size(), out, capacity));
}

long ming_spm_encode(const MingSpm* spm, const char* text, size_t size, int* out, size_t capacity,
                     char* error, size_t error_capacity) {
  try {
    std::vector<int> ids;
    const auto status = spm->processor.Encode(std::string_view(text, size), &ids);
    if (!status.ok()) {
      copy_message(status.error_message(), error, error_capacity);
      return -1;
    }
    return copy_out(ids.data(), ids.size(), out, capacity);
  } catch (const std::exception& e) {
    copy_message(e.what(), error, error_capacity);
    return -1;
  }
}

long ming_spm_decode(const MingSpm* spm, const int* ids, size_t count, char* out, size_t capacity,
                     char* error, size_t error_capacity) {
  try {
    std::string text;
    const auto status = spm->processor.Decode(std::vector<int>(ids, ids + count), &text);
    if (!status.ok()) {
      copy_message(status.error_message(), error, error_capacity);
      return -1;
    }
    return copy_out(text.data(), text.size(), out, capacity);
  } catch (const std::exception& e) {
    copy_message(e.what(), error, error_capacity);
    return -1;
  }
}

}  // extern "C"
