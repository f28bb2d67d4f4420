#include "store/pattern_index.hpp"

#include "kernels/testing.hpp"
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
using random_unit_fn = std::vector<float>(std::mt19937&, uint32_t);
constexpr random_unit_fn* random_unit = &shoal::kernels::testing::unit;
/// The int8 arithmetic the router gives the index: Shoal's kernels.
const int8_ops i8{&shoal::kernels::quantize_i8, &shoal::kernels::dot_i8};
} // namespace

TEST_CASE("pattern index finds the nearest vector and grows past its capacity") {
  std::mt19937 rng(1);
  index_config cfg;
  cfg.initial_capacity = 16;
  pattern_index idx(32, cfg, i8);
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
  pattern_index idx(16, {}, i8);
  for (uint64_t i = 0; i < 50; ++i)
    REQUIRE_FALSE(idx.add(i, random_unit(rng, 16)));
  auto h = idx.save(path);
  REQUIRE(h);
  auto back = pattern_index::load(path, 16, {}, i8, *h);
  REQUIRE(back);
  CHECK(back->size() == 50);
  CHECK(back->get(7) == idx.get(7));
  // Wrong dimension is refused.
  CHECK_FALSE(pattern_index::load(path, 32, {}, i8, *h));
  // Flip one byte: the hash check refuses the file before hnswlib reads it.
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);
    f.put('\x7f');
  }
  CHECK_FALSE(pattern_index::load(path, 16, {}, i8, *h));
  fs::remove(path);
  CHECK_FALSE(pattern_index::load(path, 16, {}, i8, *h));
}

TEST_CASE("removed ids are never found, and removals survive save and load") {
  std::mt19937 rng(3);
  auto path = fs::temp_directory_path() / ("shoal-idx-rm-" + std::to_string(rng()) + ".hnsw");
  index_config cfg;
  cfg.initial_capacity = 16;
  pattern_index idx(32, cfg, i8);
  std::vector<std::vector<float>> vs;
  for (uint64_t i = 0; i < 300; ++i) {
    vs.push_back(random_unit(rng, 32));
    REQUIRE_FALSE(idx.add(i, vs.back()));
  }
  // Remove every third vector, including its own best match.
  for (uint64_t i = 0; i < 300; i += 3)
    CHECK(idx.remove(i));
  CHECK_FALSE(idx.remove(0));    // already removed
  CHECK_FALSE(idx.remove(9999)); // unknown
  CHECK(idx.size() == 200);
  CHECK(idx.removed() == 100);
  auto check = [&](const pattern_index& x) {
    CHECK(x.size() == 200);
    for (uint64_t i = 0; i < 300; ++i) {
      CHECK(x.contains(i) == (i % 3 != 0));
      CHECK(x.get(i).empty() == (i % 3 == 0));
      for (const auto& h : x.search(vs[i], 10))
        CHECK(h.id % 3 != 0);
      if (i % 3 != 0) {
        auto hits = x.search(vs[i], 1);
        REQUIRE(hits.size() == 1);
        CHECK(hits[0].id == i);
      }
    }
  };
  check(idx);
  auto h = idx.save(path);
  REQUIRE(h);
  auto back = pattern_index::load(path, 32, cfg, i8, *h);
  REQUIRE(back);
  CHECK(back->removed() == 100);
  check(*back);
  fs::remove(path);
}

TEST_CASE(
  "adding a known id replaces its vector (also after a reload), and a removed id can return") {
  std::mt19937 rng(4);
  pattern_index idx(32, {}, i8);
  std::vector<std::vector<float>> vs;
  for (uint64_t i = 0; i < 100; ++i) {
    vs.push_back(random_unit(rng, 32));
    REQUIRE_FALSE(idx.add(i, vs.back()));
  }
  // Move id 5 to a new place: it is found there, not at its old vector.
  auto moved = random_unit(rng, 32);
  REQUIRE_FALSE(idx.add(5, moved));
  CHECK(idx.size() == 100);
  auto hits = idx.search(moved, 1);
  REQUIRE(hits.size() == 1);
  CHECK(hits[0].id == 5);
  CHECK(hits[0].similarity == doctest::Approx(1.0).epsilon(0.01));
  for (const auto& x : idx.search(vs[5], 1))
    CHECK(x.id != 5);
  CHECK(shoal::kernels::dot(idx.get(5), moved) > 0.99f);
  // Remove, then add again under the same id.
  CHECK(idx.remove(7));
  CHECK_FALSE(idx.contains(7));
  REQUIRE_FALSE(idx.add(7, vs[7]));
  CHECK(idx.contains(7));
  CHECK(idx.size() == 100);
  CHECK(idx.removed() == 2); // the old slots of 5 and 7
  hits = idx.search(vs[7], 1);
  REQUIRE(hits.size() == 1);
  CHECK(hits[0].id == 7);
  // A loaded index maps each id to its newest slot.
  auto path = fs::temp_directory_path() / ("shoal-idx-mv-" + std::to_string(rng()) + ".hnsw");
  auto h = idx.save(path);
  REQUIRE(h);
  auto back = pattern_index::load(path, 32, {}, i8, *h);
  REQUIRE(back);
  fs::remove(path);
  CHECK(back->size() == 100);
  CHECK(back->removed() == 2);
  CHECK(back->get(5) == idx.get(5));
  hits = back->search(moved, 1);
  REQUIRE(hits.size() == 1);
  CHECK(hits[0].id == 5);
  for (const auto& x : back->search(vs[5], 3))
    CHECK((x.id != 5 || x.similarity < 0.9f));
}
