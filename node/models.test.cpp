#include "node/models.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

using namespace shoal;

TEST_CASE("shoal: model specs name a trained model in SHOAL_MODELS_DIR, models/ above the binary "
          "or ./models") {
  const auto dir = std::filesystem::temp_directory_path()
                   / ("shoal-models-" + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tier-a.q8_0.gguf") << "x";
  std::ofstream(dir / "tier-a.f16.gguf") << "x";
  ::setenv("SHOAL_MODELS_DIR", dir.c_str(), 1);
  auto q8 = node::resolve_model("shoal:tier-a");
  REQUIRE_MESSAGE(q8, (q8 ? "" : q8.err().message));
  CHECK(*q8 == dir / "tier-a.q8_0.gguf"); // q8_0 unless a type is given
  auto f16 = node::resolve_model("shoal:tier-a:f16");
  REQUIRE(f16);
  CHECK(*f16 == dir / "tier-a.f16.gguf");
  // Missing: the error lists every directory looked in.
  auto missing = node::resolve_model("shoal:tier-b");
  REQUIRE_FALSE(missing);
  CHECK(missing.err().code == errc::not_found);
  CHECK(missing.err().message.find(dir.string()) != std::string::npos);
  CHECK(missing.err().message.find("SHOAL_MODELS_DIR") != std::string::npos);
  CHECK(node::resolve_model("shoal:../etc/x").err().code == errc::invalid_argument);
  CHECK(node::resolve_model("shoal:").err().code == errc::invalid_argument);
  ::unsetenv("SHOAL_MODELS_DIR");
  // Without the variable, the source tree's models/ is found from the test
  // binary (build/node/node_tests), as from build/node/shoal.
  auto committed = node::resolve_model("shoal:shoal-deb-xs");
  REQUIRE_MESSAGE(committed, (committed ? "" : committed.err().message));
  CHECK(std::filesystem::equivalent(*committed, SHOAL_SOURCE_DIR "/models/shoal-deb-xs.q8_0.gguf"));
  std::filesystem::remove_all(dir);
}
