#include "crypto/identity.hpp"

#include <doctest/doctest.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <random>

using namespace shoal;
using namespace shoal::crypto;

TEST_CASE("the key file is created once (0600) and gives the same identity after") {
  auto dir = std::filesystem::temp_directory_path()
             / ("shoal-key-" + std::to_string(std::random_device{}()));
  auto path = dir / "node.key";
  auto a = identity::load_or_create(path);
  REQUIRE(a);
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  auto b = identity::load_or_create(path);
  REQUIRE(b);
  CHECK(a->pk() == b->pk());
  CHECK(a->id() == key_id(a->pk()));
  const std::string msg = "signed by the node";
  CHECK(verify(b->pk(), msg, a->sign(msg)));
  std::ofstream(path) << "not a key\n";
  auto c = identity::load_or_create(path);
  REQUIRE_FALSE(c);
  CHECK(c.err().code == errc::corrupt_data);
  CHECK(c.err().context == path.string());
  std::filesystem::remove_all(dir);
}

TEST_CASE("one seed gives one key pair, and signatures verify only for their message and key") {
  std::array<uint8_t, 32> s1{}, s2{};
  s1.fill(1);
  s2.fill(2);
  auto a = identity::from_seed(s1), a2 = identity::from_seed(s1), b = identity::from_seed(s2);
  CHECK(a.pk() == a2.pk());
  CHECK(a.pk() != b.pk());
  auto sig = a.sign("payload");
  CHECK(verify(a.pk(), "payload", sig));
  CHECK_FALSE(verify(a.pk(), "payloaD", sig));
  CHECK_FALSE(verify(b.pk(), "payload", sig));
  sig[5] ^= 1;
  CHECK_FALSE(verify(a.pk(), "payload", sig));
}
