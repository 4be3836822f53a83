#include "ming/data/options.h"

#include "ming/core/error.h"

namespace ming::data {

DataFormat parse_data_format(const std::string& name) {
  if (name == "sharegpt") return DataFormat::sharegpt;
  if (name == "messages") return DataFormat::messages;
  if (name == "alpaca") return DataFormat::alpaca;
  if (name == "promptcblue") return DataFormat::promptcblue;
  if (name == "text") return DataFormat::text;
  if (name == "auto") return DataFormat::auto_detect;
  fail_usage(
      "unknown dataset format '{}' (expected sharegpt, messages, alpaca, promptcblue, text or "
      "auto)",
      name);
}

std::string data_format_name(DataFormat format) {
  switch (format) {
    case DataFormat::sharegpt:
      return "sharegpt";
    case DataFormat::messages:
      return "messages";
    case DataFormat::alpaca:
      return "alpaca";
    case DataFormat::promptcblue:
      return "promptcblue";
    case DataFormat::text:
      return "text";
    case DataFormat::auto_detect:
      return "auto";
  }
  return "auto";
}

MaskPolicy parse_mask_policy(const std::string& name) {
  if (name == "ming") return MaskPolicy::ming;
  if (name == "assistant") return MaskPolicy::assistant;
  fail_usage("unknown mask policy '{}' (expected ming or assistant)", name);
}

std::string mask_policy_name(MaskPolicy policy) {
  return policy == MaskPolicy::ming ? "ming" : "assistant";
}

BadExamplePolicy parse_bad_example_policy(const std::string& name) {
  if (name == "skip") return BadExamplePolicy::skip;
  if (name == "stop") return BadExamplePolicy::stop;
  fail_usage("unknown bad_example_policy '{}' (expected skip or stop)", name);
}

std::string bad_example_policy_name(BadExamplePolicy policy) {
  return policy == BadExamplePolicy::skip ? "skip" : "stop";
}

}  // namespace ming::data
