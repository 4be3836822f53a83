// Safetensors files: memory-mapped reading with a validated header, and atomic writing.
//
// Format: u64 little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}
// then the data block; offsets are relative to the data block. Everything in the header is
// checked before a byte of data is trusted: N inside the file, known dtypes, offsets inside the
// data block, end - begin == numel * itemsize, no overlaps. Errors name the file and the tensor.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace ming::io {

struct TensorInfo {
  std::string name;
  torch::ScalarType dtype = torch::kFloat32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets inside the data block
  uint64_t end = 0;
};

// One .safetensors file, memory-mapped (private copy-on-write mapping: tensors handed out may be
// modified in place without touching the file). Tensors share the mapping and keep it alive.
class SafetensorsFile {
 public:
  // Throws UsageError naming the file (and tensor) on a malformed header.
  static std::shared_ptr<SafetensorsFile> open(const std::filesystem::path& path);
  ~SafetensorsFile();

  const std::filesystem::path& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;
  // Zero-copy CPU tensor over the mapped bytes (copied only if misaligned for its dtype).
  torch::Tensor get(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data block
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
  std::weak_ptr<SafetensorsFile> self_;
};

// A set of tensors spread over one file or over shards listed in model.safetensors.index.json.
class TensorStore {
 public:
  // `path` is a .safetensors file, an index.json, or a folder holding model.safetensors or
  // model.safetensors.index.json (adapter folders: adapter_model.safetensors). Missing shards and
  // index entries that name tensors absent from their shard are errors naming both files.
  static TensorStore open(const std::filesystem::path& path);

  bool contains(const std::string& name) const { return where_.count(name) > 0; }
  const TensorInfo& info(const std::string& name) const;
  torch::Tensor get(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  // The file that holds `name` (for error messages).
  const std::filesystem::path& file_of(const std::string& name) const;

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index in files_
};

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Writes tensors (moved to CPU, made contiguous) in the given dtypes to one file, atomically.
void save_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Writes `dir/model.safetensors`, or when the total exceeds `max_shard_bytes`,
// `model-0000k-of-0000N.safetensors` shards plus `model.safetensors.index.json`.
void save_model_weights(const std::filesystem::path& dir, const NamedTensors& tensors,
                        uint64_t max_shard_bytes = 5ull << 30);

// "F32" <-> kFloat32 etc. (BF16, F16, F32, F64, I64, I32, I16, I8, U8, BOOL).
torch::ScalarType safetensors_dtype(const std::string& name);  // throws UsageError if unknown
std::string safetensors_dtype_name(torch::ScalarType dtype);

}  // namespace ming::io
