#include "sim/quality_table.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <random>

using namespace shoal::sim;

TEST_CASE("rouge_l: the longest common word subsequence over the lengths (F1)") {
  // LCS "the cat on the mat": 5 of 6 words on both sides.
  CHECK(rouge_l("the cat sat on the mat", "the cat is on the mat") == doctest::Approx(5.0 / 6.0));
  CHECK(rouge_l("Same words, same ORDER.", "same words same order") == doctest::Approx(1.0));
  CHECK(rouge_l("order words same", "same words order") == doctest::Approx(1.0 / 3.0));
  CHECK(rouge_l("", "anything") == 0.0);
  CHECK(rouge_l("nothing shared", "at all") == 0.0);
  // Precision 2/2, recall 2/4: F1 = 2/3.
  CHECK(rouge_l("gnu compiler", "the gnu c compiler") == doctest::Approx(2.0 / 3.0));
  // Symmetric in its arguments (F1).
  CHECK(rouge_l("a b c d e", "b d e f") == doctest::Approx(rouge_l("b d e f", "a b c d e")));
}

namespace {

std::string temp_file(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path()
             / ("shoal-quality-" + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

} // namespace

TEST_CASE("quality table: saved and loaded unchanged, bad files name the problem") {
  quality_table t;
  t.source = "models/eval.jsonl";
  t.ids = {"gcc", "vim", "zstd"};
  t.domains = {"devel", "editors", "utils"};
  quality_table::tier a;
  a.name = "small";
  a.fingerprint = "00aa";
  a.quality = {0.1, 0.2, 0.3};
  a.scored = {10, 20, 30};
  a.rouge_l = {0.5, 0.25, 0};
  a.ms = {10, 20, 30};
  a.tokens = {5, 6, 7};
  a.answer = {"x", "y \xE2\x9C\x93", "z"};
  t.tiers.push_back(a);
  const auto path = temp_file("table.json");
  REQUIRE(save_quality_table(t, path));
  auto back = load_quality_table(path);
  REQUIRE_MESSAGE(back, (back ? "" : back.err().message));
  CHECK(back->ids == t.ids);
  CHECK(back->domains == t.domains);
  REQUIRE(back->tiers.size() == 1);
  CHECK(back->tiers[0].quality == a.quality);
  CHECK(back->tiers[0].answer == a.answer);
  CHECK(back->tiers[0].mean_ms() == doctest::Approx(20));
  CHECK(back->tiers[0].mean_quality() == doctest::Approx(0.2));
  CHECK(back->tiers[0].mean_rouge_l() == doctest::Approx(0.25));

  std::ofstream(path) << R"({"format": "shoal quality table 1", "ids": ["a"], "domains": ["d"],)"
                      << R"( "tiers": [{"name": "t", "quality": [0.1, 0.2]}]})";
  auto bad = load_quality_table(path);
  REQUIRE_FALSE(bad);
  CHECK(bad.err().context == "quality");
  std::ofstream(path) << "{}";
  CHECK(load_quality_table(path).err().context == "format");
  CHECK_FALSE(load_quality_table(path + ".missing"));
}

TEST_CASE("evaluation documents: every field is required, errors name the line") {
  const auto path = temp_file("eval.jsonl");
  std::ofstream(path)
    << R"({"id": "gcc", "prompt": "gcc: GNU C", "reference": "The GNU C compiler.", "domain": "devel"})"
    << "\n"
    << R"({"id": "vim", "prompt": "vim: editor", "domain": "editors"})"
    << "\n";
  auto r = load_eval_documents(path);
  REQUIRE_FALSE(r);
  CHECK(r.err().message.find(":2:") != std::string::npos);
  std::ofstream(path)
    << R"({"id": "gcc", "prompt": "gcc: GNU C", "reference": "The GNU C compiler.", "domain": "devel"})"
    << "\n";
  auto ok = load_eval_documents(path);
  REQUIRE(ok);
  REQUIRE(ok->size() == 1);
  CHECK((*ok)[0].reference == "The GNU C compiler.");
}
