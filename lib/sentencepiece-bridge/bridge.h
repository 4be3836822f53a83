// The C interface of libming-sentencepiece.so, the bridge between libming and libsentencepiece.
//
// libming loads the bridge with dlmopen() into a link namespace of its own (see
// lib/ming/src/text/sentencepiece_tokenizer.cpp): there libsentencepiece's embedded protobuf
// meets no libtorch, and the sanitizer runtimes accept it (they refuse RTLD_DEEPBIND). Objects
// of that namespace never cross it: the caller owns every buffer, and the bridge only fills them.
// Functions that produce a variable amount return the full amount; when it exceeds `capacity`,
// the caller calls again with a larger buffer.
#pragma once

#include <cstddef>

extern "C" {

struct MingSpm;  // one SentencePieceProcessor

// nullptr on failure, with a message in `error` (always NUL-terminated).
MingSpm* ming_spm_load(const char* path, char* error, size_t error_capacity);
void ming_spm_free(MingSpm* spm);

int ming_spm_piece_size(const MingSpm* spm);
int ming_spm_is_control(const MingSpm* spm, int id);
int ming_spm_is_unknown(const MingSpm* spm, int id);
int ming_spm_bos_id(const MingSpm* spm);
int ming_spm_eos_id(const MingSpm* spm);
int ming_spm_piece_to_id(const MingSpm* spm, const char* piece, size_t size);
// Bytes of the piece of `id` (0..piece_size-1), copied into `out` up to `capacity`.
size_t ming_spm_id_to_piece(const MingSpm* spm, int id, char* out, size_t capacity);

// Number of ids of `text`, copied into `out` up to `capacity`; -1 on failure (message in error).
long ming_spm_encode(const MingSpm* spm, const char* text, size_t size, int* out, size_t capacity,
                     char* error, size_t error_capacity);
// Bytes of the text of `ids`, copied into `out` up to `capacity`; -1 on failure.
long ming_spm_decode(const MingSpm* spm, const int* ids, size_t count, char* out, size_t capacity,
                     char* error, size_t error_capacity);
}
