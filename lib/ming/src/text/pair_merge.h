// Greedy adjacent-pair merging, the core of every BPE-style encoder here: repeatedly replace the
// adjacent pair with the best (lowest) priority by its merged token, leftmost first on ties.
// tiktoken's _byte_pair_merge, HF's BPE::merge_all and llama2.c's encode() all follow this order;
// they differ only in what the priority is (merge rank, or minus the merged piece's score).
#pragma once

#include <cstddef>
#include <optional>
#include <queue>
#include <utility>
#include <vector>

#include "ming/text/tokenizer.h"

namespace ming::text::detail {

// merge_of(a, b) -> std::optional<std::pair<Priority, TokenId>>: the priority of merging a and b
// and the merged token, or nullopt when they don't merge. Short inputs rescan a cached priority
// per pair (cheapest below ~64 symbols); long ones use a heap with stale entries skipped, so a
// whole document as one chunk costs O(n log n) instead of O(n^2).
template <class Priority, class MergeOf>
void merge_pairs(std::vector<TokenId>& syms, const MergeOf& merge_of) {
  using Merge = std::optional<std::pair<Priority, TokenId>>;
  if (syms.size() < 2) return;
  if (syms.size() <= 64) {
    std::vector<Merge> merges(syms.size() - 1);
    for (size_t i = 0; i + 1 < syms.size(); ++i) merges[i] = merge_of(syms[i], syms[i + 1]);
    while (!merges.empty()) {
      size_t best = merges.size();
      for (size_t i = 0; i < merges.size(); ++i)
        if (merges[i] && (best == merges.size() || merges[i]->first < merges[best]->first))
          best = i;
      if (best == merges.size()) break;
      syms[best] = merges[best]->second;
      syms.erase(syms.begin() + static_cast<std::ptrdiff_t>(best) + 1);
      merges.erase(merges.begin() + static_cast<std::ptrdiff_t>(best));
      if (best < merges.size()) merges[best] = merge_of(syms[best], syms[best + 1]);
      if (best > 0) merges[best - 1] = merge_of(syms[best - 1], syms[best]);
    }
    return;
  }

  // A symbol keeps the position of its leftmost original character, so "leftmost" is the
  // smallest position among live pairs.
  const size_t n = syms.size();
  std::vector<size_t> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = i - 1;  // wraps to SIZE_MAX for the first
    next[i] = i + 1;
  }
  struct Candidate {
    Priority priority;
    size_t left;
    TokenId left_id, right_id, merged;
    bool operator>(const Candidate& o) const {
      if (o.priority < priority) return true;
      if (priority < o.priority) return false;
      return left > o.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  const auto push = [&](size_t left) {
    if (left >= n || next[left] >= n) return;
    if (const Merge m = merge_of(syms[left], syms[next[left]]))
      heap.push({m->first, left, syms[left], syms[next[left]], m->second});
  };
  for (size_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    if (!alive[c.left] || syms[c.left] != c.left_id || next[c.left] >= n) continue;
    const size_t right = next[c.left];
    if (syms[right] != c.right_id) continue;
    syms[c.left] = c.merged;
    alive[right] = false;
    next[c.left] = next[right];
    if (next[right] < n) prev[next[right]] = c.left;
    if (prev[c.left] < n) push(prev[c.left]);
    push(c.left);
  }
  std::vector<TokenId> out;
  for (size_t i = 0; i < n; i = next[i]) out.push_back(syms[i]);
  syms = std::move(out);
}

}  // namespace ming::text::detail
