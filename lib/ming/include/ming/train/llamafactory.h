// LLaMA-Factory configs as they are: its SFT examples (examples/train_lora/*_sft*.yaml,
// examples/train_full/*sft*.yaml) load in ming-train unchanged.
//
// One table holds the keys that have no effect in ming, each with the reason logged once when a
// config sets it (trust_remote_code: ming runs no model code, ...). Keys of the stages ming does
// not train (pt, rm, ppo, dpo, kto) are refused with "stage X is not supported"; any other
// unknown key stays an error with "did you mean". The comma lists LLaMA-Factory writes as
// strings (dataset: a,b; interleave_probs: 0.5,0.5) become lists.
#pragma once

#include "ming/io/config.h"

namespace ming::train {

// Rewrites `doc` in place before it is read into TrainOptions: drops (and logs) inert keys,
// checks stage / do_train, turns comma-separated strings into lists. UsageError naming the
// file, line and key for a key of another stage.
void apply_llamafactory_conventions(config::Document& doc);

}  // namespace ming::train
