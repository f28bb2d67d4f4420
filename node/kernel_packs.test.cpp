#include "node/kernel_packs.hpp"

#include "kernels/cpu.hpp"
#include "kernels/registry.hpp"
#include "kernels/vector.hpp"

#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <cmath>
#include <random>
#include <vector>

using namespace shoal;
using namespace shoal::node;
namespace fs = std::filesystem;

namespace {

/// A fresh directory holding a copy of the test pack (node/test_pack.cpp).
struct pack_dir {
  fs::path dir;
  fs::path pack;
  pack_dir() {
    dir =
      fs::temp_directory_path()
      / ("shoal-pack-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device{}()));
    fs::create_directories(dir);
    pack = dir / "testpack.so";
    fs::copy_file(SHOAL_TEST_PACK, pack);
  }
  ~pack_dir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

crypto::identity make_identity(uint8_t fill) {
  std::array<uint8_t, 32> seed{};
  seed.fill(fill);
  return crypto::identity::from_seed(seed);
}

crypto::trust_list
trust(std::initializer_list<std::pair<const char*, const crypto::identity*>> ks) {
  crypto::trust_list t;
  for (auto [name, id] : ks)
    t.add(name, id->pk());
  return t;
}

/// n values of sin(seed + i): deterministic, signed, not all equal.
std::vector<float> wave(size_t n, float seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = std::sin(seed + static_cast<float>(i));
  return v;
}

} // namespace

TEST_CASE("a kernel pack signed by a trusted key loads and registers its variant") {
  kernels::registry::instance().clear_measurements();
  pack_dir d;
  auto ops = make_identity(1), other = make_identity(2);
  REQUIRE(!sign_kernel_pack(d.pack.string(), ops));
  auto r = load_kernel_pack(d.pack.string(), trust({{"other", &other}, {"ops", &ops}}));
  REQUIRE_MESSAGE(r.ok(), r.err().message);
  CHECK(r->name == "testpack");
  CHECK(r->signer == "ops");
  CHECK(r->n_variants == 1);
  bool found = false;
  auto a = wave(1000, 3), b = wave(1000, 4);
  for (auto& [name, fn] : kernels::dot_f32_kernel().runnable())
    if (name == "testpack:unrolled8") {
      found = true;
      CHECK(fn(a.data(), b.data(), a.size())
            == doctest::Approx(kernels::dot_ref(a, b)).epsilon(1e-4));
    }
  CHECK(found);
  // At the scalar level the pack's variant overrides the built-in one.
  kernels::set_isa_cap(kernels::isa::scalar, "test");
  CHECK(kernels::dot_f32_kernel().active_name() == "testpack:unrolled8");
  CHECK(kernels::dot_f32_kernel().reason().find("from pack") != std::string::npos);
  kernels::set_isa_cap(kernels::isa::avx512, "test");
}

TEST_CASE("a tampered kernel pack is refused and registers nothing") {
  pack_dir d;
  auto ops = make_identity(1);
  REQUIRE(!sign_kernel_pack(d.pack.string(), ops));
  { // flip one byte after signing
    std::fstream f(d.pack, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(4096);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x40);
    f.seekp(4096);
    f.write(&c, 1);
  }
  size_t before = kernels::dot_f32_kernel().variants().size();
  auto r = load_kernel_pack(d.pack.string(), trust({{"ops", &ops}}));
  REQUIRE(!r.ok());
  CHECK(r.err().message.find("signature does not verify") != std::string::npos);
  CHECK(r.err().message.find("ops") != std::string::npos);
  CHECK(r.err().context == d.pack.string());
  CHECK(kernels::dot_f32_kernel().variants().size() == before);
}

TEST_CASE("unsigned, untrusted and malformed-signature packs are refused with the reason") {
  pack_dir d;
  auto ops = make_identity(1), stranger = make_identity(3);
  auto trusted = trust({{"ops", &ops}});
  auto refusal = [](const core::result<loaded_pack>& r) {
    REQUIRE(!r.ok());
    return r.err().message;
  };
  CHECK(refusal(load_kernel_pack(d.pack.string(), trusted)).find("no signature file")
        != std::string::npos);

  REQUIRE(!sign_kernel_pack(d.pack.string(), stranger));
  CHECK(refusal(load_kernel_pack(d.pack.string(), trusted)).find("does not verify")
        != std::string::npos);
  CHECK(refusal(load_kernel_pack(d.pack.string(), {})).find("no trusted keys")
        != std::string::npos);

  std::ofstream(d.pack.string() + ".sig") << "ed25519 abcd\n";
  CHECK(refusal(load_kernel_pack(d.pack.string(), trusted)).find("malformed signature")
        != std::string::npos);
  CHECK(refusal(load_kernel_pack((d.dir / "missing.so").string(), trusted)).find("cannot read")
        != std::string::npos);
}

TEST_CASE("kernels config: an unknown isa is a config error, a refused pack is only logged") {
  kernels_config cfg;
  cfg.isa = "sse9";
  auto r = apply_kernels_config(cfg);
  REQUIRE(!r.ok());
  CHECK(r.err().context == "kernels.isa");

  cfg.isa = "";
  cfg.pack_keys = "ops=" + std::string(64, 'b');
  cfg.packs = "/nonexistent/pack.so";
  r = apply_kernels_config(cfg);
  REQUIRE(r.ok());
  REQUIRE(r->size() == 1);
  CHECK((*r)[0].find("refused") != std::string::npos);

  cfg.pack_keys = "ops=12";
  r = apply_kernels_config(cfg);
  REQUIRE(!r.ok());
  CHECK(r.err().context == "kernels.pack_keys");

  cfg.pack_keys = "";
  cfg.packs = "";
  cfg.isa = "scalar";
  REQUIRE(apply_kernels_config(cfg).ok());
  CHECK(kernels::active_isa() == kernels::isa::scalar);
  CHECK(kernels::isa_cap_source() == std::string_view("config"));
  kernels::set_isa_cap(kernels::isa::avx512, "test");
}
