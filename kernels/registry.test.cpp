#include "kernels/registry.hpp"

#include "kernels/pack.hpp"
#include "kernels/vector.hpp"

#include <doctest/doctest.h>
#include <sodium.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

using namespace shoal::kernels;
namespace fs = std::filesystem;

namespace {

/// A fresh directory holding a copy of the test pack.
struct pack_dir {
  fs::path dir;
  fs::path pack;
  pack_dir() {
    dir = fs::temp_directory_path() /
          ("shoal-pack-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device{}()));
    fs::create_directories(dir);
    pack = dir / "testpack.so";
    fs::copy_file(SHOAL_TEST_PACK, pack);
  }
  ~pack_dir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

struct key_pair {
  std::array<uint8_t, 32> pk{};
  std::array<uint8_t, 64> sk{};
  key_pair() {
    REQUIRE(sodium_init() >= 0);
    crypto_sign_keypair(pk.data(), sk.data());
  }
  named_key named(std::string name) const { return {std::move(name), pk}; }
};

std::vector<float> random_vector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> v(n);
  for (float& x : v)
    x = u(rng);
  return v;
}

} // namespace

TEST_CASE("every registered kernel has a scalar reference and an active runnable variant") {
  auto list = registry::instance().kernels();
  REQUIRE(list.size() >= 6);
  for (const kernel_base* k : list) {
    CAPTURE(k->name());
    auto vs = k->variants();
    REQUIRE(!vs.empty());
    CHECK(vs.front().name == "scalar");
    CHECK(vs.front().runnable);
    bool active_runnable = false;
    for (const variant_info& v : vs)
      if (v.name == k->active_name())
        active_runnable = v.runnable && v.needs <= active_isa();
    CHECK(active_runnable);
    CHECK(!k->reason().empty());
  }
}

TEST_CASE("the instruction-set cap limits dispatch and is undone when raised") {
  set_isa_cap(isa::scalar, "test");
  CHECK(dot_f32_kernel().active_name() == "scalar");
  CHECK(dot_f32_kernel().reason().find("cap scalar from test") != std::string::npos);
  auto a = random_vector(100, 1), b = random_vector(100, 2);
  CHECK(dot(a, b) == dot_ref(a, b)); // the scalar variant is the reference
  set_isa_cap(isa::avx512, "test");
  CHECK(dot_f32_kernel().active_name() == std::string(to_string(cpu().level)));
  CHECK(parse_isa("avx2") == isa::avx2);
  CHECK(!parse_isa("sse9"));
}

TEST_CASE("tuning measures every runnable variant and activates the fastest") {
  REQUIRE(registry::instance().tune("dot_f32") == 1);
  auto vs = dot_f32_kernel().variants();
  double best = 1e30;
  std::string fastest;
  for (const variant_info& v : vs) {
    if (!v.runnable)
      continue;
    CHECK(v.ns_per_call > 0);
    if (v.ns_per_call < best) {
      best = v.ns_per_call;
      fastest = v.name;
    }
  }
  CHECK(dot_f32_kernel().active_name() == fastest);
  CHECK(dot_f32_kernel().reason().starts_with("fastest measured"));
  std::string table = registry::instance().describe();
  CHECK(table.find("dot_f32") != std::string::npos);
  CHECK(table.find(cpu().flags()) != std::string::npos);
}

TEST_CASE("a kernel pack signed by a trusted key loads and registers its variant") {
  registry::instance().clear_measurements();
  pack_dir d;
  key_pair ops;
  REQUIRE(sign_kernel_pack(d.pack.string(), ops.sk) == "");
  std::vector<named_key> trusted{key_pair{}.named("other"), ops.named("ops")};
  pack_result r = load_kernel_pack(d.pack.string(), trusted);
  INFO(r.error);
  REQUIRE(r.loaded);
  CHECK(r.name == "testpack");
  CHECK(r.signer == "ops");
  CHECK(r.variants == 1);
  bool found = false;
  auto a = random_vector(1000, 3), b = random_vector(1000, 4);
  for (auto& [name, fn] : dot_f32_kernel().runnable())
    if (name == "testpack:unrolled8") {
      found = true;
      CHECK(fn(a.data(), b.data(), a.size()) == doctest::Approx(dot_ref(a, b)).epsilon(1e-4));
    }
  CHECK(found);
  // At the scalar level the pack's variant overrides the built-in one.
  set_isa_cap(isa::scalar, "test");
  CHECK(dot_f32_kernel().active_name() == "testpack:unrolled8");
  CHECK(dot_f32_kernel().reason().find("from pack") != std::string::npos);
  set_isa_cap(isa::avx512, "test");
}

TEST_CASE("a tampered kernel pack is refused and registers nothing") {
  pack_dir d;
  key_pair ops;
  REQUIRE(sign_kernel_pack(d.pack.string(), ops.sk) == "");
  { // flip one byte after signing
    std::fstream f(d.pack, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(4096);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x40);
    f.seekp(4096);
    f.write(&c, 1);
  }
  size_t before = dot_f32_kernel().variants().size();
  std::vector<named_key> trusted{ops.named("ops")};
  pack_result r = load_kernel_pack(d.pack.string(), trusted);
  CHECK(!r.loaded);
  CHECK(r.error.find("signature does not verify") != std::string::npos);
  CHECK(r.error.find("ops") != std::string::npos);
  CHECK(dot_f32_kernel().variants().size() == before);
}

TEST_CASE("unsigned, untrusted and malformed-signature packs are refused with the reason") {
  pack_dir d;
  key_pair ops, stranger;
  std::vector<named_key> trusted{ops.named("ops")};
  pack_result r = load_kernel_pack(d.pack.string(), trusted);
  CHECK(!r.loaded);
  CHECK(r.error.find("no signature file") != std::string::npos);

  REQUIRE(sign_kernel_pack(d.pack.string(), stranger.sk) == "");
  r = load_kernel_pack(d.pack.string(), trusted);
  CHECK(!r.loaded);
  CHECK(r.error.find("does not verify") != std::string::npos);

  r = load_kernel_pack(d.pack.string(), {});
  CHECK(r.error.find("no trusted keys") != std::string::npos);

  std::ofstream(d.pack.string() + ".sig") << "ed25519 abcd\n";
  r = load_kernel_pack(d.pack.string(), trusted);
  CHECK(r.error.find("malformed signature") != std::string::npos);

  r = load_kernel_pack((d.dir / "missing.so").string(), trusted);
  CHECK(r.error.find("cannot read") != std::string::npos);
}

TEST_CASE("pack key lists parse name=hexkey items and name the bad one") {
  std::vector<named_key> keys;
  std::string error;
  std::string hex(64, 'a');
  REQUIRE(parse_key_list(" ops=" + hex + " , lab=" + std::string(64, '0'), keys, error));
  REQUIRE(keys.size() == 2);
  CHECK(keys[0].name == "ops");
  CHECK(keys[0].key[0] == 0xaa);
  CHECK(parse_key_list("", keys, error));
  CHECK(keys.empty());
  CHECK(!parse_key_list("ops=1234", keys, error));
  CHECK(error.find("ops") != std::string::npos);
  CHECK(!parse_key_list(hex, keys, error));
  CHECK(error.find("name=hexkey") != std::string::npos);
}

TEST_CASE("kernels config: an unknown isa is a config error, a refused pack is only logged") {
  std::string error;
  kernels_config cfg;
  cfg.isa = "sse9";
  apply_config(cfg, error);
  CHECK(error.find("kernels.isa") != std::string::npos);

  error.clear();
  cfg.isa = "";
  cfg.pack_keys = "ops=" + std::string(64, 'b');
  cfg.packs = "/nonexistent/pack.so";
  auto log = apply_config(cfg, error);
  CHECK(error.empty());
  REQUIRE(log.size() == 1);
  CHECK(log[0].find("refused") != std::string::npos);

  cfg.packs = "";
  cfg.isa = "scalar";
  apply_config(cfg, error);
  CHECK(error.empty());
  CHECK(active_isa() == isa::scalar);
  CHECK(isa_cap_source() == std::string_view("config"));
  set_isa_cap(isa::avx512, "test");
}
