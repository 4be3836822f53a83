// PromptCBLUE scoring, reproducing the official evaluation (michael-wzhu/PromptCBLUE,
// src/evaluation/post_generate_process.py + evaluators.py + evaluate.py).
//
// A model's generated text is first parsed into a structured answer with the official per-task
// post-processing (parse_output), then compared with the structured gold answer:
//   tuple_f1     CMeEE-V2, CMeIE(-V2), CHIP-CDN, CHIP-CDEE, CHIP-MDCFNPC, IMCS-V2-NER, IMCS-V2-SR:
//                micro F1 over de-duplicated tuples (each tuple = the values of one extracted
//                dict, ordered by key);
//   f1_weighted  CHIP-STS, KUAKE-IR, KUAKE-QTR, KUAKE-QQR (reported officially as "Micro-F1" but
//                computed as sklearn's support-weighted average F1);
//   f1_macro     CHIP-CTC, KUAKE-QIC, IMCS-V2-DAC;
//   rougeL       MedDG (per reply) and IMCS-V2-MRG (per report section), on BERT BasicTokenizer
//                tokens (Chinese characters split, English words kept), empty text -> "无 。".
// The overall score is the unweighted mean over the sub-tasks present (16 in the full set).
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ming/eval/metrics.h"

namespace ming::eval::promptcblue {

// The 16 CBLUE sub-tasks of PromptCBLUE, in the official report order.
const std::vector<std::string>& task_datasets();
// True for the 16 names and the V2 alias CMeIE-V2.
bool is_known(const std::string& task_dataset);
// The metric a sub-task is scored with (see above); UsageError for an unknown sub-task.
Metric task_metric(const std::string& task_dataset);

// Official post-processing of generated text into the structured answer:
// a JSON list of objects (extraction), a string (classification, MedDG) or an object of
// report sections (IMCS-V2-MRG). answer_choices is the record's `answer_choices` (null or list).
nlohmann::json parse_output(const std::string& task_dataset, const std::string& text,
                            const nlohmann::json& answer_choices);

// One example's statistics for its sub-task's metric; group/group_metric are filled so that
// aggregate(Metric::promptcblue, rows) gives the sub-task mean.
ExampleStats example_stats(const std::string& task_dataset, const nlohmann::json& pred,
                           const nlohmann::json& gold);

struct Example {
  std::string task_dataset;
  std::string generated;          // model output text
  nlohmann::json answer_choices;  // from the record
  nlohmann::json gold;            // structured gold answer
};

struct Report {
  std::map<std::string, double> per_task;  // sub-task -> score in [0, 1]
  double mean = 0.0;                       // mean over the sub-tasks present
  std::vector<std::string> missing;        // of the 16, the sub-tasks with no examples
  std::vector<ExampleStats> rows;          // per example, for bootstrap intervals
};
Report score(const std::vector<Example>& examples);

}  // namespace ming::eval::promptcblue
