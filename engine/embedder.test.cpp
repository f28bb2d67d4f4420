#include "engine/embedder.hpp"

#include "kernels/vector.hpp"

#include <doctest/doctest.h>

#include <cmath>

using shoal::engine::embedder;
using shoal::kernels::dot;

TEST_CASE("embedder is deterministic and L2-normalised") {
  embedder a, b;
  auto x = a.embed("The quick brown fox jumps over the lazy dog");
  auto y = b.embed("The quick brown fox jumps over the lazy dog");
  REQUIRE(x.size() == 384);
  CHECK(x == y);
  CHECK(dot(x, x) == doctest::Approx(1.0).epsilon(1e-5));
}

TEST_CASE("embedder output is pinned across machines") {
  // Fixed expected coordinates: a change here means stored patterns from
  // earlier builds would no longer match new embeddings.
  embedder e;
  auto x = e.embed("shared library for the GNU C compiler");
  double checksum = 0;
  for (size_t i = 0; i < x.size(); ++i)
    checksum += x[i] * static_cast<double>(i % 7 + 1);
  // Value recorded from this implementation; XXH3 is byte-defined, so any
  // little- or big-endian machine must reproduce it.
  CHECK(checksum == doctest::Approx(-5.687899).epsilon(1e-5));
}

TEST_CASE("near-duplicates are closer than unrelated texts") {
  embedder e;
  auto a =
    e.embed("GNU C compiler: the GNU C compiler is a fairly portable optimizing compiler for C");
  auto b = e.embed(
    "GNU C compiler - the GNU C compiler is a portable, optimizing compiler for the C language");
  auto c = e.embed("Puzzle game where you guide lemmings through levels full of traps");
  auto d = e.embed("Python 3 module for parsing YAML documents");
  CHECK(dot(a, b) > 0.7f);
  CHECK(dot(a, b) > dot(a, c) + 0.4f);
  CHECK(dot(a, b) > dot(a, d) + 0.4f);
  // Case and punctuation do not matter.
  auto u = e.embed("Hello, World!");
  auto v = e.embed("hello world");
  CHECK(dot(u, v) == doctest::Approx(1.0).epsilon(1e-5));
}

TEST_CASE("text without words embeds to the zero vector") {
  embedder e;
  auto x = e.embed("  ,.;!? ");
  for (float v : x)
    CHECK(v == 0.0f);
}

TEST_CASE("embedder honours its dimension") {
  shoal::engine::embedder_config cfg;
  cfg.dim = 64;
  embedder e(cfg);
  auto x = e.embed("dimension check");
  CHECK(x.size() == 64);
  CHECK(dot(x, x) == doctest::Approx(1.0).epsilon(1e-5));
}
