#include "store/archive.hpp"

#include "store/testing.hpp"

#include <doctest/doctest.h>

#include <fstream>

using namespace shoal::store;
using shoal::errc;

namespace {

std::string slurp(const std::filesystem::path& f) {
  std::ifstream in(f, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void spit(const std::filesystem::path& f, const std::string& s) {
  std::ofstream(f, std::ios::binary | std::ios::trunc) << s;
}

} // namespace

TEST_CASE("archive: a segment reads back record for record, compressed, and leaves no temporary") {
  auto dir = testing::temp_dir("archive");
  std::filesystem::create_directories(dir);
  std::vector<archive_record> recs;
  for (uint64_t k = 0; k < 2000; ++k) // compressible values, as witness records are
    recs.push_back({1000 + 3 * k, "record " + std::to_string(k) + std::string(200, 'x')});
  recs.push_back({1ull << 62, ""}); // an empty value
  auto file = dir / archive_file_name(recs.front().key, recs.back().key);
  REQUIRE_FALSE(write_archive(file, table::witness, recs));
  CHECK_FALSE(std::filesystem::exists(file.string() + ".tmp"));
  CHECK(std::filesystem::file_size(file) < 2000 * 200 / 10);
  auto seg = read_archive(file);
  REQUIRE(seg);
  CHECK(seg->source == table::witness);
  REQUIRE(seg->records.size() == recs.size());
  for (size_t i = 0; i < recs.size(); ++i) {
    CHECK(seg->records[i].key == recs[i].key);
    CHECK(seg->records[i].value == recs[i].value);
  }
  uint64_t first = 0, last = 0;
  CHECK(parse_archive_file_name(file.filename().string(), first, last));
  CHECK(first == 1000);
  CHECK(last == 1ull << 62);
  CHECK_FALSE(parse_archive_file_name("0000000000000001-0000000000000000.shoalarc", first, last));
  CHECK_FALSE(parse_archive_file_name("notes.txt", first, last));
  // Keys out of order are refused before anything is written.
  std::vector<archive_record> unsorted{{5, "a"}, {5, "b"}};
  auto bad = dir / "unsorted.shoalarc";
  auto err = write_archive(bad, table::witness, unsorted);
  CHECK(err.code == errc::invalid_argument);
  CHECK_FALSE(std::filesystem::exists(bad));
  std::filesystem::remove_all(dir);
}

TEST_CASE("archive: damaged segments are refused with a message that names the file and the "
          "problem") {
  auto dir = testing::temp_dir("archive-bad");
  std::filesystem::create_directories(dir);
  std::vector<archive_record> recs;
  for (uint64_t k = 1; k <= 100; ++k)
    recs.push_back({k, std::string(64, static_cast<char>('a' + k % 26))});
  auto good = dir / "good.shoalarc";
  REQUIRE_FALSE(write_archive(good, table::witness, recs));
  const std::string bytes = slurp(good);
  auto check = [&](const char* what, const std::string& damaged, const char* says) {
    CAPTURE(what);
    auto f = dir / "damaged.shoalarc";
    spit(f, damaged);
    auto seg = read_archive(f);
    REQUIRE_FALSE(seg);
    CHECK(seg.err().code == errc::corrupt_data);
    auto msg = seg.err().message;
    CHECK(msg.find("damaged.shoalarc") != std::string::npos);
    CHECK_MESSAGE(msg.find(says) != std::string::npos, msg);
  };
  check("empty file", "", "bad magic");
  check("another format", "PK\3\4" + bytes.substr(4), "bad magic");
  auto v = bytes;
  v[8] = 9;
  check("future version", v, "version 9");
  check("truncated", bytes.substr(0, bytes.size() - 7), "zstd");
  check("trailing bytes", bytes + "junk", "after the compressed frame");
  // A flipped bit inside the frame: zstd's content checksum (or its own
  // structure checks) catches it.
  auto flipped = bytes;
  flipped[bytes.size() / 2] ^= 0x10;
  check("flipped bit", flipped, "zstd");
  auto missing = read_archive(dir / "absent.shoalarc");
  REQUIRE_FALSE(missing);
  CHECK(missing.err().code == errc::storage_failure);
  std::filesystem::remove_all(dir);
}
