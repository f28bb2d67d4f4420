#include "store/pattern_index.hpp"

#include "kernels/vector.hpp"

#include <algorithm>
#include <cmath>
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <random>

namespace fs = std::filesystem;
using namespace shoal::store;

namespace {
std::vector<float> random_unit(std::mt19937& rng, uint32_t dim) {
  std::normal_distribution<float> n;
  std::vector<float> v(dim);
  for (auto& x : v)
    x = n(rng);
  shoal::kernels::normalize(v);
  return v;
}
} // namespace

TEST_CASE("pattern index finds the nearest vector and grows past its capacity") {
  std::mt19937 rng(1);
  index_config cfg;
  cfg.initial_capacity = 16;
  pattern_index idx(32, cfg);
  std::vector<std::vector<float>> vs;
  for (uint64_t i = 0; i < 200; ++i) {
    vs.push_back(random_unit(rng, 32));
    REQUIRE_FALSE(idx.add(i + 1000, vs.back()));
  }
  CHECK(idx.size() == 200);
  auto hits = idx.search(vs[17], 3);
  REQUIRE(hits.size() == 3);
  CHECK(hits[0].id == 1017);
  // Vectors are stored int8-quantized: similarities are within ~0.01.
  CHECK(hits[0].similarity == doctest::Approx(1.0).epsilon(0.01));
  CHECK(hits[0].similarity <= 1.0f);
  CHECK(hits[0].similarity >= hits[1].similarity);
  auto back = idx.get(1017);
  REQUIRE(back.size() == vs[17].size());
  float amax = 0;
  for (float x : vs[17])
    amax = std::max(amax, std::abs(x));
  for (size_t i = 0; i < back.size(); ++i)
    CHECK(std::abs(back[i] - vs[17][i]) <= amax / 127 / 2 * 1.001f);
  CHECK(idx.get(5).empty());
}

TEST_CASE("a saved index loads back, and a corrupted file is refused") {
  std::mt19937 rng(2);
  auto path = fs::temp_directory_path() / ("shoal-idx-" + std::to_string(rng()) + ".hnsw");
  pattern_index idx(16, {});
  for (uint64_t i = 0; i < 50; ++i)
    REQUIRE_FALSE(idx.add(i, random_unit(rng, 16)));
  auto h = idx.save(path);
  REQUIRE(h);
  auto back = pattern_index::load(path, 16, {}, *h);
  REQUIRE(back);
  CHECK(back->size() == 50);
  CHECK(back->get(7) == idx.get(7));
  // Wrong dimension is refused.
  CHECK_FALSE(pattern_index::load(path, 32, {}, *h));
  // Flip one byte: the hash check refuses the file before hnswlib reads it.
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);
    f.put('\x7f');
  }
  CHECK_FALSE(pattern_index::load(path, 16, {}, *h));
  fs::remove(path);
  CHECK_FALSE(pattern_index::load(path, 16, {}, *h));
}
