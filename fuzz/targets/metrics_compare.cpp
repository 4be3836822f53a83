// ming-eval --compare: metrics.json and predictions.jsonl of one run (input: the two files
// joined by "\n--8<--\n"), compared with itself.
#include "../fuzz.h"
#include "ming/eval/report.h"

MING_FUZZ_TARGET(metrics_compare) {
  const auto parts = ming::fuzz::split_parts(ming::fuzz::as_text(data, size), 2);
  const auto metrics = ming::fuzz::write_file("compare/a/metrics.json", parts[0]);
  ming::fuzz::write_file("compare/a/predictions.jsonl", parts[1]);
  ming::fuzz::expect_clean([&] {
    const auto c = ming::eval::compare_runs(metrics, metrics, {.n_resamples = 50});
    ming::eval::format_comparison(c, "a", "a");
    ming::eval::comparison_json(c, "a", "a");
  });
}
