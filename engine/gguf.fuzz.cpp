/// @file libFuzzer target for the GGUF reader: any bytes either parse into a
/// file whose tensors and strings lie inside the input, or give an error with
/// a message. Built with clang (-fsanitize=fuzzer,address,undefined) by
/// engine/CMakeLists.txt when clang++ is installed; run by CTest (label
/// `fuzz`) for a bounded time, or by hand:
///   build/engine/gguf_fuzz -max_total_time=600 build/engine/gguf_corpus
#include "engine/gguf.hpp"

#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shoal::engine;
  auto bytes = std::span<const std::byte>(reinterpret_cast<const std::byte*>(data), size);
  auto f = gguf_file::parse(bytes);
  if (!f) {
    if (f.err().message.empty())
      std::abort();
    return 0;
  }
  const std::byte* end = bytes.data() + bytes.size();
  for (const auto& t : (*f)->tensors())
    if (t.data < bytes.data() || t.data + t.n_bytes > end)
      std::abort();
  for (const auto& kv : (*f)->metadata()) {
    for (auto s : kv.strings)
      if (reinterpret_cast<const std::byte*>(s.data()) + s.size() > end)
        std::abort();
    // Exercise the typed look-ups on every key.
    (void)(*f)->find_uint(kv.key);
    (void)(*f)->find_float(kv.key);
    (void)(*f)->find_string(kv.key);
    if (kv.is_array()) {
      (void)(*f)->get_floats(kv.key);
      (void)(*f)->get_ints(kv.key);
    }
  }
  return 0;
}
