#include "ming/data/options.h"

namespace ming::data {

DataFormat parse_data_format(const std::string& name) {
  return config::parse_enum<DataFormat>(name, "dataset format");
}

std::string data_format_name(DataFormat format) {
  return std::string(config::name_of(format));
}

MaskPolicy parse_mask_policy(const std::string& name) {
  return config::parse_enum<MaskPolicy>(name, "mask");
}

std::string mask_policy_name(MaskPolicy policy) {
  return std::string(config::name_of(policy));
}

BadExamplePolicy parse_bad_example_policy(const std::string& name) {
  return config::parse_enum<BadExamplePolicy>(name, "bad_example_policy");
}

std::string bad_example_policy_name(BadExamplePolicy policy) {
  return std::string(config::name_of(policy));
}

}  // namespace ming::data
