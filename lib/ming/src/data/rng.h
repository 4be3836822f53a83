// A small, fully specified random generator for data order.
//
// std::shuffle and std::uniform_int_distribution are implementation-defined, so the same seed
// would give different batches with libstdc++ and libc++; the order of training data must not
// depend on the standard library, so shuffling is done here with SplitMix64 and an unbiased
// bounded draw (rejection sampling).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

namespace ming::data::detail {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n), n > 0, without modulo bias.
  uint64_t below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = next();
    while (x >= limit);
    return x % n;
  }

 private:
  uint64_t state_;
};

// Mixes several integers into one seed (so (seed, epoch) and (seed, dataset, pass) streams are
// unrelated to each other).
inline uint64_t mix_seed(std::initializer_list<uint64_t> parts) {
  uint64_t h = 0x243f6a8885a308d3ULL;
  for (uint64_t p : parts) {
    SplitMix64 g(h ^ p);
    h = g.next();
  }
  return h;
}

// Fisher-Yates.
template <typename T>
void shuffle(std::vector<T>& v, uint64_t seed) {
  SplitMix64 g(seed);
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[g.below(i)]);
}

}  // namespace ming::data::detail
