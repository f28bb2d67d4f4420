// The one doctest main shared by every module's unit-test binary.
//
// CTest runs each case as `<binary> -tc=<name>`. A name CTest mangled (e.g.
// cut at ';') matches nothing, and doctest would then report success having
// run no test at all — which once hid five cases. So a run that was given a
// test-case filter and ran no test case fails, naming the filter.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <atomic>
#include <cstdio>
#include <cstring>

namespace {

std::atomic<int> cases_started{0};

struct count_cases : doctest::IReporter {
  explicit count_cases(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData&) override { ++cases_started; }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

} // namespace

DOCTEST_REGISTER_LISTENER("count_cases", 1, count_cases);

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  int rc = context.run();
  if (context.shouldExit())
    return rc;
  const char* filter = nullptr;
  for (int i = 1; i < argc; ++i)
    for (const char* opt : {"-tc=", "--test-case="})
      if (std::strncmp(argv[i], opt, std::strlen(opt)) == 0)
        filter = argv[i];
  if (filter && cases_started.load() == 0) {
    std::fprintf(stderr, "doctest_main: the filter %s matched no test case\n", filter);
    return rc != 0 ? rc : 1;
  }
  return rc;
}
