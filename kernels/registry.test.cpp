#include "kernels/registry.hpp"

#include "kernels/pack.hpp"
#include "kernels/vector.hpp"

#include <doctest/doctest.h>

#include <random>
#include <vector>

using namespace shoal::kernels;

namespace {

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

namespace {

/// A pack variant of dot_f32 that sums from the back.
float dot_backwards(const float* a, const float* b, size_t n) noexcept {
  float r = 0;
  while (n-- > 0)
    r += a[n] * b[n];
  return r;
}

shoal_pack_variant variant(const char* kernel, const char* signature, const char* name,
                           uint32_t needs) {
  return {kernel, signature, name, needs, reinterpret_cast<void (*)(void)>(&dot_backwards)};
}

} // namespace

TEST_CASE("a pack's variants register under pack:variant and win at equal level") {
  registry::instance().clear_measurements();
  shoal_pack_variant v[] = {
    variant("dot_f32", "float(const float*,const float*,size_t)", "backwards", 0)};
  shoal_pack pack{shoal_pack_abi, "inproc", 1, v};
  auto err = register_pack(pack, "registry.test.cpp");
  INFO(err.message);
  REQUIRE(!err);
  bool found = false;
  auto a = random_vector(1000, 3), b = random_vector(1000, 4);
  for (auto& [name, fn] : dot_f32_kernel().runnable())
    if (name == "inproc:backwards") {
      found = true;
      CHECK(fn(a.data(), b.data(), a.size()) == doctest::Approx(dot_ref(a, b)).epsilon(1e-4));
    }
  CHECK(found);
  set_isa_cap(isa::scalar, "test");
  CHECK(dot_f32_kernel().reason().find("from pack") != std::string::npos);
  set_isa_cap(isa::avx512, "test");
}

TEST_CASE("a pack with any faulty variant registers nothing and says which") {
  size_t before = dot_f32_kernel().variants().size();
  const char* sig = "float(const float*,const float*,size_t)";
  shoal_pack_variant good = variant("dot_f32", sig, "good", 0);
  struct fault {
    shoal_pack_variant bad;
    const char* pack_name;
    uint32_t abi;
    const char* expect;
  };
  for (const fault& f : {
         fault{variant("no_such_kernel", sig, "x", 0), "p", shoal_pack_abi, "unknown kernel"},
         fault{variant("dot_f32", "float(int)", "x", 0), "p", shoal_pack_abi, "has signature"},
         fault{variant("dot_f32", sig, "x", 7), "p", shoal_pack_abi, "unknown level"},
         fault{variant("dot_f32", sig, nullptr, 0), "p", shoal_pack_abi, "null field"},
         fault{good, "bad name!", shoal_pack_abi, "invalid pack name"},
         fault{good, "p", shoal_pack_abi + 1, "ABI version"},
       }) {
    shoal_pack_variant v[] = {good, f.bad};
    shoal_pack pack{f.abi, f.pack_name, 2, v};
    auto err = register_pack(pack, "registry.test.cpp");
    CAPTURE(f.expect);
    CHECK(err.code == shoal::errc::invalid_argument);
    CHECK(err.message.find(f.expect) != std::string::npos);
    CHECK(dot_f32_kernel().variants().size() == before);
  }
}
