#pragma once
/// @file Helpers for the store module's tests (not part of the library).

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>

namespace shoal::store::testing {

/// A fresh, not yet existing path under the system temp directory.
inline std::filesystem::path temp_dir(const char* name) {
  auto p = std::filesystem::temp_directory_path()
           / (std::string("shoal-") + name + "-" + std::to_string(std::random_device{}()));
  std::filesystem::remove_all(p);
  return p;
}

/// Every byte of every file under `dir`, concatenated (to look for plaintext).
inline std::string slurp_dir(const std::filesystem::path& dir) {
  std::string all;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.is_regular_file()) {
      std::ifstream in(e.path(), std::ios::binary);
      all.append(std::istreambuf_iterator<char>(in), {});
    }
  return all;
}

/// A 64-hex-digit seal key, and another one.
inline constexpr const char* seal_key_a =
  "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
inline constexpr const char* seal_key_b =
  "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

} // namespace shoal::store::testing
