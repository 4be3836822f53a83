#include "ming/data/registry.h"

#include <algorithm>

#include "ming/core/error.h"
#include "ming/io/config.h"
#include "ming/io/json.h"

namespace ming::data {

namespace fs = std::filesystem;
using io::Json;

namespace {

// Keys of a dataset_info.json entry that ming cannot honour, and why.
struct Refused {
  const char* key;
  const char* why;
};
constexpr Refused kRefusedEntryKeys[] = {
    {"hf_hub_url", "ming reads local files only; download the dataset and set file_name"},
    {"ms_hub_url", "ming reads local files only; download the dataset and set file_name"},
    {"om_hub_url", "ming reads local files only; download the dataset and set file_name"},
    {"script_url", "ming runs no dataset loading scripts; convert the data to JSON lines"},
    {"cloud_file_name", "ming reads local files only; copy the file and set file_name"},
    {"ranking", "preference pairs train stages rm/dpo/kto, which ming-train does not support"},
    {"num_samples", "use max_samples (first N records) or the dataset's weight instead"},
    {"subset", "Hub subsets are not read; give the file itself"},
    {"split", "Hub splits are not read; give the file itself"},
    {"folder", "Hub folders are not read; give the file itself"},
};
constexpr const char* kRefusedColumns[] = {"tools",  "images",   "videos", "audios",
                                           "chosen", "rejected", "kto_tag"};

std::string string_field(const Json& obj, const std::string& key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return "";
  if (!it->is_string())
    fail_usage("{}: '{}' must be a string, got {}", where, key, it->type_name());
  return it->get<std::string>();
}

// Reads a {"key": "name", ...} block into a visitable struct of strings, refusing keys it does
// not know.
template <typename T>
T read_names(const Json& entry, const char* block, const std::string& where,
             const std::vector<std::string>& refused = {}) {
  T out;
  auto it = entry.find(block);
  if (it == entry.end() || it->is_null()) return out;
  if (!it->is_object()) fail_usage("{}: '{}' must be an object", where, block);
  std::vector<std::string> known;
  auto collect = [&](const char* key, std::string& field, const char* = "") {
    known.push_back(key);
    field = string_field(*it, key, fmt::format("{} {}", where, block));
  };
  out.visit(collect);
  for (auto kv = it->begin(); kv != it->end(); ++kv) {
    if (std::find(known.begin(), known.end(), kv.key()) != known.end()) continue;
    if (std::find(refused.begin(), refused.end(), kv.key()) != refused.end())
      fail_usage("{}: {}.{} is not supported (ming trains text conversations only)", where, block,
                 kv.key());
    fail_usage("{}: unknown key '{}.{}'{}", where, block, kv.key(),
               config::did_you_mean(kv.key(), known));
  }
  return out;
}

}  // namespace

std::vector<std::string> split_comma_list(const std::string& text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    std::string item =
        text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    const size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

std::vector<DatasetSpec> resolve_dataset_names(std::vector<DatasetSpec> specs,
                                               const fs::path& dataset_dir) {
  Json registry;
  const fs::path info = dataset_dir / "dataset_info.json";
  for (DatasetSpec& spec : specs) {
    if (spec.name.empty() || !spec.path.empty()) continue;
    if (registry.is_null()) {
      if (!fs::exists(info))
        fail_usage(
            "dataset '{}': no registry '{}' (datasets given by name are looked up in "
            "dataset_dir/dataset_info.json; set dataset_dir, or give the file as {{path: ...}})",
            spec.name, info.string());
      registry = io::read_json(info);
      if (!registry.is_object())
        fail_usage("'{}': expected an object of dataset entries, got {}", info.string(),
                   registry.type_name());
    }
    auto it = registry.find(spec.name);
    if (it == registry.end()) {
      std::vector<std::string> names;
      for (auto kv = registry.begin(); kv != registry.end(); ++kv) names.push_back(kv.key());
      fail_usage("dataset '{}' is not in '{}'{}", spec.name, info.string(),
                 config::did_you_mean(spec.name, names));
    }
    const Json& entry = *it;
    const std::string where = fmt::format("'{}': dataset '{}'", info.string(), spec.name);
    if (!entry.is_object()) fail_usage("{}: expected an object", where);
    for (const Refused& r : kRefusedEntryKeys)
      if (entry.contains(r.key) && !entry[r.key].is_null() &&
          !(entry[r.key].is_boolean() && !entry[r.key].get<bool>()))
        fail_usage("{}: '{}' is not supported: {}", where, r.key, r.why);
    static const std::vector<std::string> known = {"file_name", "formatting", "columns", "tags"};
    for (auto kv = entry.begin(); kv != entry.end(); ++kv) {
      bool refused = false;
      for (const Refused& r : kRefusedEntryKeys) refused = refused || kv.key() == r.key;
      if (!refused && std::find(known.begin(), known.end(), kv.key()) == known.end())
        fail_usage("{}: unknown key '{}'{}", where, kv.key(),
                   config::did_you_mean(kv.key(), known));
    }
    const std::string file = string_field(entry, "file_name", where);
    if (file.empty()) fail_usage("{}: no file_name", where);
    const std::string formatting = string_field(entry, "formatting", where);
    if (!formatting.empty() && formatting != "alpaca" && formatting != "sharegpt")
      fail_usage("{}: formatting '{}' is not one of alpaca, sharegpt", where, formatting);
    spec.path = (dataset_dir / file).string();
    spec.format = formatting.empty() ? "alpaca" : formatting;
    spec.columns = read_names<DatasetColumns>(
        entry, "columns", where,
        std::vector<std::string>(std::begin(kRefusedColumns), std::end(kRefusedColumns)));
    spec.tags = read_names<DatasetTags>(entry, "tags", where);
    if (fs::is_directory(spec.path))
      fail_usage("{}: file_name '{}' is a folder; name one JSON or JSON-lines file", where, file);
  }
  return specs;
}

std::string DatasetSpec::display_name() const {
  if (!name.empty()) return name;
  return fs::path(path).stem().string();
}

}  // namespace ming::data
