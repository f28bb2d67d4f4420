#pragma once
/// @file Helpers shared by the federation module's tests (not part of the library).

#include "crypto/identity.hpp"

#include <array>
#include <cstdint>

namespace shoal::federation::testing {

/// A deterministic identity: the seed is 32 bytes of `fill`, so each value
/// gives another node id and key. Throws only if libsodium cannot start.
inline crypto::identity identity_from(uint8_t fill) {
  std::array<uint8_t, 32> seed;
  seed.fill(fill);
  return crypto::identity::from_seed(seed);
}

} // namespace shoal::federation::testing
