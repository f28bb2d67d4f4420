#include "engine/gguf.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <random>

using namespace shoal::engine;

namespace {

std::vector<std::byte> f32_bytes(const std::vector<float>& v) {
  std::vector<std::byte> out(v.size() * 4);
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

/// A small model-like file: every metadata type the engine reads, two tensors.
gguf_writer sample_writer() {
  gguf_writer w;
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.block_count", 2);
  w.set_u64("llama.context_length", 4096);
  w.set_i32("tokenizer.ggml.bos_token_id", 1);
  w.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  w.set_strings("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "a"});
  w.set_f32s("tokenizer.ggml.scores", {0, 0, 0, -1.5f});
  w.set_i32s("tokenizer.ggml.token_type", {2, 3, 3, 1});
  std::vector<float> a(64), b(32 * 3);
  for (size_t i = 0; i < a.size(); ++i)
    a[i] = static_cast<float>(i);
  for (size_t i = 0; i < b.size(); ++i)
    b[i] = -static_cast<float>(i);
  REQUIRE(w.add_tensor("a.weight", {64}, 0, f32_bytes(a)));
  REQUIRE(w.add_tensor("b.weight", {32, 3}, 0, f32_bytes(b)));
  return w;
}

std::string parse_error(const std::vector<std::byte>& bytes) {
  auto r = gguf_file::parse(bytes);
  return r ? std::string() : r.err().message;
}

void patch_u64(std::vector<std::byte>& b, size_t at, uint64_t v) {
  std::memcpy(&b[at], &v, 8);
}
void patch_u32(std::vector<std::byte>& b, size_t at, uint32_t v) {
  std::memcpy(&b[at], &v, 4);
}

/// Byte offset of the first occurrence of `s` in the file.
size_t offset_of(const std::vector<std::byte>& b, std::string_view s) {
  std::string_view all(reinterpret_cast<const char*>(b.data()), b.size());
  auto at = all.find(s);
  REQUIRE(at != std::string_view::npos);
  return at;
}

} // namespace

TEST_CASE("gguf: what the writer writes the reader reads back, zero-copy") {
  auto bytes = sample_writer().bytes();
  auto f = gguf_file::parse(bytes);
  REQUIRE_MESSAGE(f, (f ? "" : f.err().message));
  const auto& g = **f;
  CHECK(g.version() == 3);
  CHECK(g.alignment() == 32);
  CHECK(*g.get_string("general.architecture") == "llama");
  CHECK(*g.get_uint("llama.block_count") == 2);
  CHECK(*g.get_uint("llama.context_length") == 4096);
  CHECK(*g.get_uint("tokenizer.ggml.bos_token_id") == 1);
  CHECK(*g.get_float("llama.attention.layer_norm_rms_epsilon") == doctest::Approx(1e-5));
  CHECK(*g.get_bool("tokenizer.ggml.add_bos_token"));
  auto tokens = g.get_strings("tokenizer.ggml.tokens");
  REQUIRE(tokens);
  REQUIRE(tokens->size() == 4);
  CHECK((*tokens)[3] == "a");
  CHECK(*g.get_floats("tokenizer.ggml.scores") == std::vector<float>{0, 0, 0, -1.5f});
  CHECK(*g.get_ints("tokenizer.ggml.token_type") == std::vector<int64_t>{2, 3, 3, 1});

  REQUIRE(g.tensors().size() == 2);
  const gguf_tensor* b = g.tensor("b.weight");
  REQUIRE(b);
  CHECK(b->ne == std::vector<uint64_t>{32, 3});
  CHECK(b->n_bytes == 32 * 3 * 4);
  CHECK(reinterpret_cast<uintptr_t>(b->data) % 4 == 0);
  // zero-copy: the tensor points into the given bytes
  CHECK(b->data >= bytes.data());
  CHECK(b->data + b->n_bytes <= bytes.data() + bytes.size());
  float last;
  std::memcpy(&last, b->data + b->n_bytes - 4, 4);
  CHECK(last == -95.0f);
  CHECK((b->offset % g.alignment()) == 0);
}

TEST_CASE("gguf: open maps a file, errors name the path") {
  auto dir = std::filesystem::temp_directory_path() / "shoal-gguf-test";
  std::filesystem::create_directories(dir);
  auto path = (dir / "m.gguf").string();
  REQUIRE(sample_writer().write(path));
  auto f = gguf_file::open(path);
  REQUIRE(f);
  CHECK((*f)->tensor("a.weight")->ne[0] == 64);
  auto missing = gguf_file::open((dir / "nope.gguf").string());
  REQUIRE_FALSE(missing);
  CHECK(missing.err().message.find("nope.gguf: cannot open") != std::string::npos);
  auto is_dir = gguf_file::open(dir.string());
  REQUIRE_FALSE(is_dir);
  CHECK(is_dir.err().message.find("not a regular file") != std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST_CASE("gguf: typed look-ups name the key and the type") {
  auto bytes = sample_writer().bytes();
  auto f = gguf_file::parse(bytes);
  REQUIRE(f);
  const auto& g = **f;
  auto m = g.get_uint("llama.embedding_length");
  REQUIRE_FALSE(m);
  CHECK(m.err().message == "metadata key llama.embedding_length is missing");
  auto wrong = g.get_uint("general.architecture");
  REQUIRE_FALSE(wrong);
  CHECK(wrong.err().message == "metadata key general.architecture is string, expected an integer");
  auto arr = g.get_strings("tokenizer.ggml.scores");
  REQUIRE_FALSE(arr);
  CHECK(arr.err().message.find("is array of f32, expected an array of strings")
        != std::string::npos);
  CHECK_FALSE(g.get_bool("llama.block_count"));
  CHECK(g.find_uint("absent")->has_value() == false);
  CHECK_FALSE(g.find_string("llama.block_count"));
}

TEST_CASE("gguf: every truncation is an error, never a crash") {
  auto bytes = sample_writer().bytes();
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<std::byte> cut(bytes.begin(), bytes.begin() + static_cast<long>(n));
    auto msg = parse_error(cut);
    INFO("length " << n);
    REQUIRE_FALSE(msg.empty());
  }
  CHECK(parse_error({}).find("truncated") != std::string::npos);
}

TEST_CASE("gguf: bad headers are refused with a message naming the problem") {
  auto good = sample_writer().bytes();
  SUBCASE("wrong magic") {
    auto b = good;
    b[0] = std::byte{'X'};
    CHECK(parse_error(b).find("not a GGUF file") != std::string::npos);
  }
  SUBCASE("version 1 and unknown versions") {
    auto b = good;
    patch_u32(b, 4, 1);
    CHECK(parse_error(b).find("version 1 is not supported") != std::string::npos);
    patch_u32(b, 4, 7);
    CHECK(parse_error(b).find("unknown GGUF version 7") != std::string::npos);
    patch_u32(b, 4, 2); // v2 has the same layout
    CHECK(parse_error(b).empty());
  }
  SUBCASE("absurd counts") {
    auto b = good;
    patch_u64(b, 8, 1ull << 40);
    CHECK(parse_error(b).find("tensors is more than") != std::string::npos);
    b = good;
    patch_u64(b, 16, ~0ull);
    CHECK(parse_error(b).find("metadata pairs is more than") != std::string::npos);
  }
  SUBCASE("absurd string length") {
    auto b = good;
    patch_u64(b, 24, 1ull << 62); // first key's length
    CHECK(parse_error(b).find("bytes long, more than") != std::string::npos);
  }
  SUBCASE("unknown value type") {
    auto b = good;
    size_t at = offset_of(b, "general.architecture") + std::strlen("general.architecture");
    patch_u32(b, at, 99);
    CHECK(parse_error(b).find("unknown value type 99") != std::string::npos);
  }
  SUBCASE("duplicate key") {
    gguf_writer w;
    w.set_u32("x", 1);
    w.set_u32("x", 2);
    CHECK(parse_error(w.bytes()).find("appears twice") != std::string::npos);
  }
  SUBCASE("bad alignment") {
    gguf_writer w;
    w.set_u32("general.alignment", 24);
    CHECK(parse_error(w.bytes()).find("not a power of two") != std::string::npos);
    gguf_writer v;
    v.set_string("general.alignment", "32");
    CHECK(parse_error(v.bytes()).find("must be a u32") != std::string::npos);
  }
  SUBCASE("nested arrays") {
    auto b = good;
    size_t at = offset_of(b, "tokenizer.ggml.scores") + std::strlen("tokenizer.ggml.scores");
    patch_u32(b, at + 4, 9); // element type: array
    CHECK(parse_error(b).find("nests arrays") != std::string::npos);
  }
}

TEST_CASE("gguf: bad tensor infos are refused") {
  auto good = sample_writer().bytes();
  // tensor info of "b.weight": name, u32 n_dims, u64 ne[2], u32 type, u64 offset
  size_t info = offset_of(good, "b.weight") + std::strlen("b.weight");
  SUBCASE("too many dimensions") {
    auto b = good;
    patch_u32(b, info, 5);
    CHECK(parse_error(b).find("has 5 dimensions") != std::string::npos);
  }
  SUBCASE("zero and absurd dimensions") {
    auto b = good;
    patch_u64(b, info + 4, 0);
    CHECK(parse_error(b).find("of size 0") != std::string::npos);
    patch_u64(b, info + 4, 1ull << 50);
    CHECK(parse_error(b).find("of size") != std::string::npos);
  }
  SUBCASE("unknown type") {
    auto b = good;
    patch_u32(b, info + 20, 4); // Q4_2: removed from ggml
    CHECK(parse_error(b).find("unknown ggml type 4") != std::string::npos);
  }
  SUBCASE("row not a multiple of the block") {
    auto b = good;
    patch_u64(b, info + 4, 16);
    patch_u32(b, info + 20, 8); // Q8_0 needs rows of 32k
    CHECK(parse_error(b).find("not a multiple of its block size 32") != std::string::npos);
  }
  SUBCASE("misaligned offset") {
    auto b = good;
    patch_u64(b, info + 24, 260);
    CHECK(parse_error(b).find("not a multiple of the alignment") != std::string::npos);
  }
  SUBCASE("offset beyond the end") {
    auto b = good;
    patch_u64(b, info + 24, 1ull << 32);
    CHECK(parse_error(b).find("beyond the end of the file") != std::string::npos);
  }
  SUBCASE("overlapping tensors") {
    auto b = good;
    patch_u64(b, info + 24, 0);
    CHECK(parse_error(b).find("overlap") != std::string::npos);
  }
  SUBCASE("duplicate names") {
    gguf_writer w;
    std::vector<std::byte> d(128);
    REQUIRE(w.add_tensor("t", {32}, 0, d));
    REQUIRE(w.add_tensor("t", {32}, 0, d));
    CHECK(parse_error(w.bytes()).find("appears twice") != std::string::npos);
  }
}

TEST_CASE("gguf: the writer refuses inconsistent tensors") {
  gguf_writer w;
  CHECK_FALSE(w.add_tensor("x", {32}, 4, std::vector<std::byte>(64)));
  CHECK_FALSE(w.add_tensor("x", {16}, 8, std::vector<std::byte>(17)));
  CHECK_FALSE(w.add_tensor("x", {32}, 8, std::vector<std::byte>(33)));
  CHECK(w.add_tensor("x", {32, 2}, 8, std::vector<std::byte>(68)));
  CHECK(w.add_tensor("y", {256}, 12, std::vector<std::byte>(144)));
}

TEST_CASE("gguf: random corruption never crashes the reader") {
  // A deterministic sweep in the spirit of the libFuzzer target
  // (engine/gguf.fuzz.cpp): flip bytes of a valid file and parse; every
  // result is either a valid file whose tensors lie inside the bytes or an
  // error with a message.
  auto good = sample_writer().bytes();
  std::mt19937_64 rng(42);
  for (int iter = 0; iter < 4000; ++iter) {
    auto b = good;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k)
      b[rng() % b.size()] = static_cast<std::byte>(rng());
    auto r = gguf_file::parse(b);
    if (!r) {
      REQUIRE_FALSE(r.err().message.empty());
      continue;
    }
    for (const auto& t : (*r)->tensors()) {
      REQUIRE(t.data >= b.data());
      REQUIRE(t.data + t.n_bytes <= b.data() + b.size());
    }
  }
}
