#include "ming/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "ming/core/error.h"
#include "ming/io/files.h"
#include "ming/io/json.h"

namespace ming::io {

namespace {
constexpr uint64_t kMaxHeaderBytes = 100000000;
}  // namespace

namespace fs = std::filesystem;

torch::ScalarType safetensors_dtype(const std::string& name) {
  static const std::map<std::string, torch::ScalarType> table = {
      {"BF16", torch::kBFloat16}, {"F16", torch::kHalf},  {"F32", torch::kFloat32},
      {"F64", torch::kFloat64},   {"I64", torch::kInt64}, {"I32", torch::kInt32},
      {"I16", torch::kInt16},     {"I8", torch::kInt8},   {"U8", torch::kUInt8},
      {"BOOL", torch::kBool}};
  auto it = table.find(name);
  if (it == table.end()) fail_usage("unsupported safetensors dtype '{}'", name);
  return it->second;
}

std::string safetensors_dtype_name(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kBFloat16:
      return "BF16";
    case torch::kHalf:
      return "F16";
    case torch::kFloat32:
      return "F32";
    case torch::kFloat64:
      return "F64";
    case torch::kInt64:
      return "I64";
    case torch::kInt32:
      return "I32";
    case torch::kInt16:
      return "I16";
    case torch::kInt8:
      return "I8";
    case torch::kUInt8:
      return "U8";
    case torch::kBool:
      return "BOOL";
    default:
      fail("cannot store dtype {} in safetensors", c10::toString(dtype));
  }
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const fs::path& path) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->self_ = f;
  const std::string where = path.string();

  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail_usage("cannot open '{}': {}", where, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail("cannot stat '{}': {}", where, std::strerror(errno));
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    fail_usage("'{}': not a safetensors file ({} bytes, the 8-byte header length is missing)",
               where, file_size);
  }
  f->map_size_ = file_size;
  f->map_ = ::mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (f->map_ == MAP_FAILED) {
    f->map_ = nullptr;
    fail("cannot map '{}': {}", where, std::strerror(errno));
  }
  const auto* bytes = static_cast<const uint8_t*>(f->map_);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > file_size - 8)
    fail_usage("'{}': header length {} runs past the end of the file ({} bytes)", where, header_len,
               file_size);
  // The format's own limit (safetensors refuses larger headers too).
  if (header_len > kMaxHeaderBytes)
    fail_usage("'{}': header length {} is more than the {} MB a safetensors header may have", where,
               header_len, kMaxHeaderBytes / 1000000);
  const Json header =
      parse_json(std::string_view(reinterpret_cast<const char*>(bytes) + 8, header_len),
                 "'" + where + "' header");
  if (!header.is_object()) fail_usage("'{}': header is not a JSON object", where);
  f->data_ = bytes + 8 + header_len;
  const uint64_t data_size = file_size - 8 - header_len;

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (!it->is_object()) fail_usage("'{}': __metadata__ is not an object", where);
      for (auto m = it->begin(); m != it->end(); ++m)
        if (m->is_string()) f->metadata_[m.key()] = m->get<std::string>();
      continue;
    }
    const Json& entry = *it;
    auto bad = [&](const std::string& why) {
      fail_usage("'{}': tensor '{}': {}", where, name, why);
    };
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets"))
      bad("header entry needs dtype, shape and data_offsets");
    TensorInfo info;
    info.name = name;
    if (!entry["dtype"].is_string()) bad("dtype is not a string");
    try {
      info.dtype = safetensors_dtype(entry["dtype"].get<std::string>());
    } catch (const UsageError& e) {
      bad(e.what());
    }
    if (!entry["shape"].is_array()) bad("shape is not an array");
    // Sizes are multiplied with overflow checks: a wrapped product could match a tiny block.
    uint64_t numel = 1;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_unsigned()) bad("shape has a non-integer or negative dimension");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, dim, &numel))
        bad(fmt::format("shape [{}] has more elements than fit in 64 bits", entry["shape"].dump()));
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& off = entry["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned())
      bad("data_offsets must be [begin, end]");
    info.begin = off[0].get<uint64_t>();
    info.end = off[1].get<uint64_t>();
    if (info.begin > info.end || info.end > data_size)
      bad(
          fmt::format("data_offsets [{}, {}] fall outside the data block of {} bytes (truncated "
                      "file?)",
                      info.begin, info.end, data_size));
    uint64_t expected = 0;
    if (__builtin_mul_overflow(numel, uint64_t{c10::elementSize(info.dtype)}, &expected))
      bad(fmt::format("shape {} needs more bytes than fit in 64 bits", entry["shape"].dump()));
    if (info.end - info.begin != expected)
      bad(fmt::format("holds {} bytes but dtype {} and shape [{}] need {}", info.end - info.begin,
                      entry["dtype"].get<std::string>(), fmt::join(info.shape, ", "), expected));
    f->tensors_.push_back(std::move(info));
  }
  // Overlapping tensors mean a corrupt or hostile header.
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : f->tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->begin < by_offset[i - 1]->end && by_offset[i]->begin != by_offset[i]->end)
      fail_usage("'{}': tensors '{}' and '{}' overlap", where, by_offset[i - 1]->name,
                 by_offset[i]->name);
  std::sort(f->tensors_.begin(), f->tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
  for (size_t i = 0; i < f->tensors_.size(); ++i) f->index_[f->tensors_[i].name] = i;
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

torch::Tensor SafetensorsFile::get(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (!info) fail_usage("'{}': no tensor named '{}'", path_.string(), name);
  auto options = torch::TensorOptions().dtype(info->dtype);
  if (info->end == info->begin) return torch::empty(info->shape, options);
  void* ptr = const_cast<uint8_t*>(data_ + info->begin);
  const size_t align = c10::elementSize(info->dtype);
  if (reinterpret_cast<uintptr_t>(ptr) % align != 0) {
    auto out = torch::empty(info->shape, options);
    std::memcpy(out.data_ptr(), ptr, info->end - info->begin);
    return out;
  }
  auto keep_alive = self_.lock();
  return torch::from_blob(
      ptr, info->shape, [keep_alive](void*) mutable { keep_alive.reset(); }, options);
}

TensorStore TensorStore::open(const fs::path& path) {
  TensorStore store;
  fs::path index_path;
  fs::path single;
  if (fs::is_directory(path)) {
    for (const char* name :
         {"model.safetensors.index.json", "adapter_model.safetensors.index.json"})
      if (fs::exists(path / name)) index_path = path / name;
    for (const char* name : {"model.safetensors", "adapter_model.safetensors"})
      if (index_path.empty() && single.empty() && fs::exists(path / name)) single = path / name;
    if (index_path.empty() && single.empty())
      fail_usage("'{}': no model.safetensors or model.safetensors.index.json in this folder",
                 path.string());
  } else if (path.extension() == ".json") {
    index_path = path;
  } else {
    single = path;
  }
  if (!single.empty()) {
    auto f = SafetensorsFile::open(single);
    for (const auto& t : f->tensors()) store.where_[t.name] = 0;
    store.files_.push_back(std::move(f));
    return store;
  }
  Json index = read_json(index_path);
  if (!index.contains("weight_map") || !index["weight_map"].is_object())
    fail_usage("'{}': expected a \"weight_map\" object", index_path.string());
  std::map<std::string, size_t> shard_ids;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    if (!it->is_string())
      fail_usage("'{}': weight_map entry '{}' is not a file name", index_path.string(), it.key());
    const std::string shard = it->get<std::string>();
    auto sid = shard_ids.find(shard);
    if (sid == shard_ids.end()) {
      fs::path shard_path = index_path.parent_path() / shard;
      if (!fs::exists(shard_path))
        fail_usage("'{}': shard '{}' listed for tensor '{}' is missing", index_path.string(),
                   shard_path.string(), it.key());
      store.files_.push_back(SafetensorsFile::open(shard_path));
      sid = shard_ids.emplace(shard, store.files_.size() - 1).first;
    }
    if (!store.files_[sid->second]->find(it.key()))
      fail_usage("'{}': tensor '{}' is listed in shard '{}' but that file does not hold it",
                 index_path.string(), it.key(), shard);
    store.where_[it.key()] = sid->second;
  }
  return store;
}

const TensorInfo& TensorStore::info(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail_usage("no tensor named '{}' in the checkpoint", name);
  return *files_[it->second]->find(name);
}

torch::Tensor TensorStore::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail_usage("no tensor named '{}' in the checkpoint", name);
  return files_[it->second]->get(name);
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  for (const auto& [name, _] : where_) out.push_back(name);
  return out;
}

const fs::path& TensorStore::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail_usage("no tensor named '{}' in the checkpoint", name);
  return files_[it->second]->path();
}

void save_safetensors(const fs::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> cpu;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (header.contains(name))
      fail("save_safetensors('{}'): duplicate tensor '{}'", path.string(), name);
    auto c = t.detach().to(torch::kCPU).contiguous();
    uint64_t n = c.numel() * c.element_size();
    header[name] = {{"dtype", safetensors_dtype_name(c.scalar_type())},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + n}}};
    offset += n;
    cpu.push_back(std::move(c));
  }
  std::string text = header.dump();
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');  // keep the data block 8-byte aligned
  std::string prefix(8, '\0');
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
  AtomicFile out(path);
  out.write(prefix);
  out.write(text);
  for (const auto& c : cpu)
    out.write(
        std::string_view(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size()));
  out.commit();
}

void save_model_weights(const fs::path& dir, const NamedTensors& tensors,
                        uint64_t max_shard_bytes) {
  uint64_t total = 0;
  for (const auto& [_, t] : tensors) total += t.numel() * t.element_size();
  fs::create_directories(dir);
  if (total <= max_shard_bytes) {
    save_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
    return;
  }
  std::vector<NamedTensors> shards(1);
  uint64_t current = 0;
  for (const auto& entry : tensors) {
    uint64_t n = entry.second.numel() * entry.second.element_size();
    if (current > 0 && current + n > max_shard_bytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(entry);
    current += n;
  }
  Json weight_map = Json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    std::string name = fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
    save_safetensors(dir / name, shards[i], {{"format", "pt"}});
    for (const auto& [tensor, _] : shards[i]) weight_map[tensor] = name;
  }
  write_json(dir / "model.safetensors.index.json",
             Json{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}});
}

}  // namespace ming::io
