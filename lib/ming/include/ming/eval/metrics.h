// Evaluation metrics computed from per-example statistics.
//
// Every metric is split in two steps so that confidence intervals can resample examples:
//   1. example_*()  turns one (prediction, gold) pair into an ExampleStats row;
//   2. aggregate()  turns any multiset of rows (all of them, or a bootstrap resample given as
//                   indices) into the corpus-level value.
// Corpus-level metrics (F1 over labels, tuple F1, BLEU, perplexity) keep their sufficient
// statistics per example (counts, labels, n-gram matches), so a resample re-aggregates them
// exactly as the full set would be, rather than averaging per-example scores.
//
// All values are fractions in [0, 1] (perplexity: >= 1); reports multiply by 100 if they want.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace ming::eval {

enum class Metric {
  accuracy,     // mean of 0/1 correctness
  exact_match,  // mean of 0/1 normalised string equality
  f1_micro,     // label F1, micro-averaged (equals accuracy for single-label classification)
  f1_macro,     // label F1, unweighted mean over labels seen in gold or prediction (sklearn)
  f1_weighted,  // label F1, mean over labels weighted by gold support (sklearn "weighted avg")
  tuple_f1,     // micro F1 over sets of extracted tuples (entities, relations, ...)
  rouge1,       // mean per-example ROUGE-1 F
  rouge2,       // mean per-example ROUGE-2 F
  rougeL,       // mean per-example ROUGE-L (LCS) F
  bleu4,        // corpus BLEU-4 with brevity penalty
  perplexity,   // exp(total NLL / total tokens)
  promptcblue,  // mean over PromptCBLUE sub-tasks of each one's official metric
};

// "accuracy", "rougeL", ... <-> Metric. parse_metric returns false for an unknown name.
const char* metric_name(Metric m);
bool parse_metric(const std::string& name, Metric* out);
std::vector<std::string> metric_names();

// One example's sufficient statistics. Which fields matter depends on the metric.
struct ExampleStats {
  // Mean-type metrics (accuracy, exact_match, rouge*): value summed, count summed,
  // aggregate = sum(value) / sum(count). Perplexity: value = NLL in nats, count = tokens.
  double value = 0.0;
  double count = 1.0;
  // Label metrics (f1_*): gold and predicted label.
  std::string gold_label, pred_label;
  // tuple_f1: true positives, false positives, false negatives over de-duplicated tuples.
  int64_t tp = 0, fp = 0, fn = 0;
  // bleu4: clipped n-gram matches and candidate n-gram totals for n = 1..4, and lengths.
  std::array<double, 4> matches{}, totals{};
  double hyp_len = 0.0, ref_len = 0.0;
  // promptcblue: the sub-task this row belongs to and the metric that sub-task uses.
  std::string group;
  Metric group_metric = Metric::accuracy;
};

// ---- text normalisation and tokenisation -------------------------------------------------------

// Language-aware tokens for ROUGE/BLEU.
//   "en": lower-cased words; punctuation characters are separate tokens.
//   "zh": BERT BasicTokenizer rules (what PromptCBLUE's official scorer uses): each CJK
//         character is a token, runs of other letters/digits form words, punctuation characters
//         are separate tokens, text lower-cased and accents stripped.
// Both drop control characters and split on Unicode whitespace.
std::vector<std::string> tokenize_for_metric(const std::string& text, const std::string& language);

// For exact match: lower-case, drop punctuation (ASCII and Unicode P*), drop the words
// a/an/the, collapse whitespace (SQuAD's normalize_answer, extended to Unicode punctuation).
std::string normalize_answer(const std::string& text);

// Trims Unicode whitespace (like Python's str.strip()).
std::string strip_unicode(const std::string& text);

// ---- per-example statistics
// ----------------------------------------------------------------------

ExampleStats example_correct(bool correct);  // accuracy
ExampleStats example_exact_match(const std::string& pred, const std::string& gold);
ExampleStats example_label(const std::string& pred, const std::string& gold);  // f1_*
// Tuples are compared as exact strings after de-duplication within each side.
ExampleStats example_tuples(const std::vector<std::string>& pred,
                            const std::vector<std::string>& gold);
// ROUGE-N / ROUGE-L F on tokens (see rouge_f). n = 1, 2 or 0 for L.
ExampleStats example_rouge(const std::vector<std::string>& pred,
                           const std::vector<std::string>& gold, int n);
// BLEU-4 statistics of one hypothesis against one reference.
ExampleStats example_bleu(const std::vector<std::string>& pred,
                          const std::vector<std::string>& gold);
// Perplexity: summed negative log-likelihood (nats) over n_tokens tokens.
ExampleStats example_nll(double nll_sum, double n_tokens);

// ROUGE F-scores as rouge_chinese/pltrdy `rouge` computes them (PromptCBLUE's scorer):
// n-grams are compared as sets (each distinct n-gram once), ROUGE-L uses the LCS of the whole
// token sequences, F = 2PR / (P + R + 1e-8), and an empty side gives P or R = 0.
double rouge_n_f(const std::vector<std::string>& pred, const std::vector<std::string>& gold, int n);
double rouge_l_f(const std::vector<std::string>& pred, const std::vector<std::string>& gold);

// ---- aggregation ------------------------------------------------------------------------------

// Corpus value over rows[indices] (all rows when indices is empty). Indices may repeat.
double aggregate(Metric m, const std::vector<ExampleStats>& rows,
                 const std::vector<size_t>& indices = {});

// Precision/recall/F1 of single labels in sklearn's classification_report conventions
// (zero_division=0; labels = union of gold and predicted labels).
struct LabelF1 {
  double micro = 0, macro = 0, weighted = 0;
  double macro_precision = 0, macro_recall = 0, weighted_precision = 0, weighted_recall = 0;
};
LabelF1 label_f1(const std::vector<ExampleStats>& rows, const std::vector<size_t>& indices = {});

// BLEU-4 (Papineni et al. 2002), corpus level: clipped n-gram matches and totals are summed
// over examples, p_n = matches_n / totals_n, BLEU = BP * exp(mean_n log p_n),
// BP = exp(1 - ref_len / hyp_len) when hyp_len < ref_len, else 1.
// Smoothing (Chen & Cherry 2014, method 1, as NLTK's SmoothingFunction().method1): an n-gram
// order with zero matches uses p_n = 0.1 / totals_n instead of 0. An empty corpus gives 0.

// ---- confidence intervals ----------------------------------------------------------------------

struct Interval {
  double point = 0, lo = 0, hi = 0;  // point estimate and the percentile interval
};

// Percentile bootstrap over examples: n_resamples resamples of size N with replacement,
// each aggregated with `m`; lo/hi are the (1-level)/2 and (1+level)/2 quantiles (linear
// interpolation). Deterministic given seed (mt19937_64, index = draw mod N).
Interval bootstrap_ci(Metric m, const std::vector<ExampleStats>& rows, int n_resamples = 1000,
                      uint64_t seed = 1234, double level = 0.95);

// Paired bootstrap for two systems scored on the same examples (rows_a[i] and rows_b[i] are the
// same example). delta = metric(A) - metric(B); the interval is the percentile interval of the
// resampled deltas; p_value is two-sided, by the shift method (Berg-Kirkpatrick et al. 2012):
// p = (1 + #{|delta* - delta| >= |delta|}) / (1 + n_resamples).
struct PairedResult {
  double a = 0, b = 0;
  Interval delta;
  double p_value = 1.0;
};
PairedResult paired_bootstrap(Metric m, const std::vector<ExampleStats>& rows_a,
                              const std::vector<ExampleStats>& rows_b, int n_resamples = 1000,
                              uint64_t seed = 1234, double level = 0.95);

}  // namespace ming::eval
