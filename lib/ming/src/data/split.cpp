// Held-out evaluation examples taken from the training data (val_size), per dataset, seeded.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "data/rng.h"
#include "ming/core/error.h"
#include "ming/data/loader.h"

namespace ming::data {

namespace {

// How many examples each dataset gives up: a fraction of each, or a count shared out in
// proportion to the sizes with the largest remainders rounded up (ties to the earlier dataset).
std::vector<int64_t> held_out_counts(const std::vector<int64_t>& sizes, double val_size) {
  const size_t n = sizes.size();
  std::vector<int64_t> counts(n, 0);
  const int64_t total = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
  if (val_size < 1) {
    for (size_t d = 0; d < n; ++d)
      counts[d] = static_cast<int64_t>(std::llround(val_size * static_cast<double>(sizes[d])));
    return counts;
  }
  const int64_t want = static_cast<int64_t>(val_size);
  std::vector<std::pair<double, size_t>> remainders;
  int64_t assigned = 0;
  for (size_t d = 0; d < n; ++d) {
    const double exact = static_cast<double>(want) * static_cast<double>(sizes[d]) / total;
    counts[d] = static_cast<int64_t>(std::floor(exact));
    assigned += counts[d];
    remainders.push_back({exact - std::floor(exact), d});
  }
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = 0; assigned < want && i < n; ++i, ++assigned) ++counts[remainders[i].second];
  return counts;
}

}  // namespace

TrainingData::Split TrainingData::split_held_out(const TrainingData& data, double val_size,
                                                 uint64_t seed) {
  if (!(val_size > 0) || !std::isfinite(val_size) ||
      (val_size >= 1 && val_size != std::floor(val_size)))
    fail_usage("val_size: {} must be a fraction in (0, 1) or a whole number of examples", val_size);
  std::vector<int64_t> sizes;
  for (const auto& e : data.examples_) sizes.push_back(static_cast<int64_t>(e.size()));
  const int64_t total = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
  if (val_size >= 1 && static_cast<int64_t>(val_size) >= total)
    fail_usage("val_size: {} examples held out of {} leaves none to train on", val_size, total);
  const std::vector<int64_t> counts = held_out_counts(sizes, val_size);

  std::shared_ptr<TrainingData> train(new TrainingData(data)), eval(new TrainingData(data));
  for (size_t d = 0; d < data.examples_.size(); ++d) {
    if (counts[d] >= sizes[d])
      fail_usage("val_size: dataset '{}' has {} examples; holding out {} leaves none to train on",
                 data.stats_[d].name, sizes[d], counts[d]);
    std::vector<int64_t> perm(sizes[d]);
    std::iota(perm.begin(), perm.end(), 0);
    detail::shuffle(perm, detail::mix_seed({seed, 3, static_cast<uint64_t>(d)}));
    // Each part keeps the file order of its examples.
    std::vector<char> held(sizes[d], 0);
    for (int64_t i = 0; i < counts[d]; ++i) held[perm[i]] = 1;
    train->examples_[d].clear();
    eval->examples_[d].clear();
    for (int64_t i = 0; i < sizes[d]; ++i)
      (held[i] ? eval : train)->examples_[d].push_back(data.examples_[d][i]);
    for (TrainingData* part : {train.get(), eval.get()}) {
      DatasetStats& st = part->stats_[d];
      st.n_examples = static_cast<int64_t>(part->examples_[d].size());
      st.n_tokens = st.n_label_tokens = 0;
      for (const auto& ex : part->examples_[d]) {
        st.n_tokens += static_cast<int64_t>(ex.input_ids.size());
        for (int32_t l : ex.labels) st.n_label_tokens += l != kIgnoreIndex;
      }
    }
  }
  // A dataset too small to give any example up is evaluated without a part of its own.
  for (size_t d = eval->examples_.size(); d-- > 0;) {
    if (!eval->examples_[d].empty()) continue;
    eval->examples_.erase(eval->examples_.begin() + static_cast<std::ptrdiff_t>(d));
    eval->stats_.erase(eval->stats_.begin() + static_cast<std::ptrdiff_t>(d));
    if (eval->options_.datasets.size() > d)
      eval->options_.datasets.erase(eval->options_.datasets.begin() +
                                    static_cast<std::ptrdiff_t>(d));
  }
  if (eval->examples_.empty())
    fail_usage("val_size: {} holds out no example of {} (use a larger fraction or a count)",
               val_size, total);
  eval->options_.packing = false;
  train->finish();
  eval->finish();
  return {train, eval};
}

}  // namespace ming::data
