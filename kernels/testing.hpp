#pragma once
/// @file Helpers shared by tests of kernels and the modules above it (not
/// part of the library).

#include "kernels/vector.hpp"

#include <random>
#include <vector>

namespace shoal::kernels::testing {

/// A random direction in `dim` dimensions: normal components, L2-normalised.
inline std::vector<float> unit(std::mt19937& rng, uint32_t dim) {
  std::normal_distribution<float> n;
  std::vector<float> v(dim);
  for (auto& x : v)
    x = n(rng);
  normalize(v);
  return v;
}

} // namespace shoal::kernels::testing
