// LLaMA-Factory's dataset registry: datasets named in a config (`dataset: identity,alpaca_en_demo`)
// are looked up in <dataset_dir>/dataset_info.json, so a LLaMA-Factory data folder works as is.
//
//   {"alpaca_en_demo": {"file_name": "alpaca_en_demo.json"},
//    "medical_chat":  {"file_name": "chat.jsonl", "formatting": "sharegpt",
//                      "columns": {"messages": "messages"},
//                      "tags": {"role_tag": "role", "content_tag": "content",
//                               "user_tag": "user", "assistant_tag": "assistant"}}}
//
// file_name is relative to dataset_dir; formatting is alpaca (the default) or sharegpt; columns
// (prompt, query, response, system, history, messages) and tags (role_tag, content_tag, user_tag,
// assistant_tag, observation_tag, function_tag, system_tag) rename the fields. Entries that need
// what ming does not read (Hub or cloud downloads, preference pairs, images, tools) are refused
// naming the dataset and the key.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "ming/data/options.h"

namespace ming::data {

// "a, b" -> {"a", "b"} (LLaMA-Factory's comma lists: dataset, eval_dataset, interleave_probs).
std::vector<std::string> split_comma_list(const std::string& text);

// Fills path, format, columns and tags of every spec that has a name and no path from
// <dataset_dir>/dataset_info.json; specs with a path are returned unchanged. UsageError naming
// the file and the dataset when the registry is missing, the name is unknown (with "did you
// mean"), or the entry asks for something ming cannot read.
std::vector<DatasetSpec> resolve_dataset_names(std::vector<DatasetSpec> specs,
                                               const std::filesystem::path& dataset_dir);

}  // namespace ming::data
