#pragma once
/// @file Internal helpers of proto's Cap'n Proto codecs (records.cpp, wire.cpp).
/// Not part of the module's public interface.

#include "core/error.hpp"
#include "proto/records.hpp"
#include "shoal/proto/store.capnp.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::proto {

namespace codec {

inline std::string to_bytes(::capnp::MessageBuilder& mb) {
  auto words = ::capnp::messageToFlatArray(mb);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

inline ::capnp::Data::Reader as_data(const std::vector<float>& v) {
  return {reinterpret_cast<const kj::byte*>(v.data()), v.size() * sizeof(float)};
}

inline bool read_floats(::capnp::Data::Reader d, std::vector<float>& out) {
  if (d.size() % sizeof(float) != 0)
    return false;
  out.resize(d.size() / sizeof(float));
  std::memcpy(out.data(), d.begin(), d.size());
  return true;
}

/// Decodes `bytes` as a message with root `Root` and hands its reader to `fn`.
/// Cap'n Proto needs 8-byte aligned words, LMDB promises 2: copy first.
template <class Root, class T, class F>
core::result<T> decode_with(std::string_view bytes, const char* what, F fn) {
  if (bytes.size() % sizeof(::capnp::word) != 0 || bytes.empty())
    return core::error{errc::corrupt_data, std::string(what) + ": truncated or overlong: size "
                                             + std::to_string(bytes.size())
                                             + " is not a whole number of 8-byte words"};
  kj::Array<::capnp::word> aligned = kj::heapArray<::capnp::word>(bytes.size() / 8);
  std::memcpy(aligned.begin(), bytes.data(), bytes.size());
  try {
    ::capnp::ReaderOptions opts;
    opts.traversalLimitInWords = 64 * 1024 * 1024;
    ::capnp::FlatArrayMessageReader reader(aligned.asPtr(), opts);
    T out;
    if (auto err = fn(reader.getRoot<Root>(), out); !err.empty())
      return core::error{errc::corrupt_data, std::string(what) + ": " + err};
    return out;
  } catch (const kj::Exception& e) {
    return core::error{errc::corrupt_data, std::string(what) + ": " + e.getDescription().cStr()};
  }
}

inline void write_tiers(::capnp::List<capnp::TierStat>::Builder out,
                        const std::vector<tier_stat>& in) {
  for (unsigned i = 0; i < in.size(); ++i) {
    out[i].setSumQuality(in[i].sum_quality);
    out[i].setSumQuality2(in[i].sum_quality2);
    out[i].setCount(in[i].count);
  }
}

inline std::vector<tier_stat> read_tiers(::capnp::List<capnp::TierStat>::Reader in) {
  std::vector<tier_stat> out;
  out.reserve(in.size());
  for (auto t : in)
    out.push_back({t.getSumQuality(), t.getSumQuality2(), t.getCount()});
  return out;
}

} // namespace codec

} // namespace shoal::proto
