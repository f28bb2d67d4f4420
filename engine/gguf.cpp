#include "engine/gguf.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <unordered_set>

namespace shoal::engine {

namespace {

constexpr uint32_t gguf_magic = 0x46554747; // "GGUF" little endian
constexpr uint64_t default_alignment = 32;

size_t scalar_size(gguf_type t) noexcept {
  switch (t) {
    case gguf_type::u8:
    case gguf_type::i8:
    case gguf_type::boolean:
      return 1;
    case gguf_type::u16:
    case gguf_type::i16:
      return 2;
    case gguf_type::u32:
    case gguf_type::i32:
    case gguf_type::f32:
      return 4;
    case gguf_type::u64:
    case gguf_type::i64:
    case gguf_type::f64:
      return 8;
    case gguf_type::string:
    case gguf_type::array:
      return 0;
  }
  return 0;
}

bool is_integer(gguf_type t) noexcept {
  switch (t) {
    case gguf_type::u8:
    case gguf_type::i8:
    case gguf_type::u16:
    case gguf_type::i16:
    case gguf_type::u32:
    case gguf_type::i32:
    case gguf_type::u64:
    case gguf_type::i64:
      return true;
    default:
      return false;
  }
}

template <class T>
T load(const std::byte* p) noexcept {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

/// Element i of a numeric payload as a double / int64 (exact for integers up
/// to 2^53 as double; int64 path exact for all but u64 > 2^63).
double number_at(gguf_type t, const std::byte* p, uint64_t i) noexcept {
  switch (t) {
    case gguf_type::u8:
      return load<uint8_t>(p + i);
    case gguf_type::i8:
      return load<int8_t>(p + i);
    case gguf_type::u16:
      return load<uint16_t>(p + 2 * i);
    case gguf_type::i16:
      return load<int16_t>(p + 2 * i);
    case gguf_type::u32:
      return load<uint32_t>(p + 4 * i);
    case gguf_type::i32:
      return load<int32_t>(p + 4 * i);
    case gguf_type::f32:
      return load<float>(p + 4 * i);
    case gguf_type::u64:
      return static_cast<double>(load<uint64_t>(p + 8 * i));
    case gguf_type::i64:
      return static_cast<double>(load<int64_t>(p + 8 * i));
    case gguf_type::f64:
      return load<double>(p + 8 * i);
    case gguf_type::boolean:
      return load<uint8_t>(p + i) != 0 ? 1.0 : 0.0;
    default:
      return 0;
  }
}

/// Integer element i; false when it does not fit int64.
bool integer_at(gguf_type t, const std::byte* p, uint64_t i, int64_t& out) noexcept {
  switch (t) {
    case gguf_type::u64: {
      uint64_t v = load<uint64_t>(p + 8 * i);
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return false;
      out = static_cast<int64_t>(v);
      return true;
    }
    case gguf_type::i64:
      out = load<int64_t>(p + 8 * i);
      return true;
    default:
      out = static_cast<int64_t>(number_at(t, p, i));
      return true;
  }
}

std::string quoted(std::string_view s) {
  std::string out = "\"";
  for (char c : s.substr(0, 80)) {
    auto u = static_cast<unsigned char>(c);
    out += (u >= 0x20 && u < 0x7f) ? c : '?';
  }
  if (s.size() > 80)
    out += "...";
  return out + "\"";
}

} // namespace

std::string_view to_string(gguf_type t) noexcept {
  switch (t) {
    case gguf_type::u8:
      return "u8";
    case gguf_type::i8:
      return "i8";
    case gguf_type::u16:
      return "u16";
    case gguf_type::i16:
      return "i16";
    case gguf_type::u32:
      return "u32";
    case gguf_type::i32:
      return "i32";
    case gguf_type::f32:
      return "f32";
    case gguf_type::boolean:
      return "bool";
    case gguf_type::string:
      return "string";
    case gguf_type::array:
      return "array";
    case gguf_type::u64:
      return "u64";
    case gguf_type::i64:
      return "i64";
    case gguf_type::f64:
      return "f64";
  }
  return "unknown";
}

std::optional<ggml_type_size> ggml_type_info(uint32_t type) noexcept {
  // ggml.c's type_traits (block size, type size); ids 4, 5, 31-33 and 36-38
  // were removed from ggml and are refused.
  struct row {
    uint32_t id, elems, bytes;
    std::string_view name;
  };
  static constexpr std::array<row, 32> table{{
    {0, 1, 4, "F32"},         {1, 1, 2, "F16"},         {2, 32, 18, "Q4_0"},
    {3, 32, 20, "Q4_1"},      {6, 32, 22, "Q5_0"},      {7, 32, 24, "Q5_1"},
    {8, 32, 34, "Q8_0"},      {9, 32, 36, "Q8_1"},      {10, 256, 84, "Q2_K"},
    {11, 256, 110, "Q3_K"},   {12, 256, 144, "Q4_K"},   {13, 256, 176, "Q5_K"},
    {14, 256, 210, "Q6_K"},   {15, 256, 292, "Q8_K"},   {16, 256, 66, "IQ2_XXS"},
    {17, 256, 74, "IQ2_XS"},  {18, 256, 98, "IQ3_XXS"}, {19, 256, 50, "IQ1_S"},
    {20, 32, 18, "IQ4_NL"},   {21, 256, 110, "IQ3_S"},  {22, 256, 82, "IQ2_S"},
    {23, 256, 136, "IQ4_XS"}, {24, 1, 1, "I8"},         {25, 1, 2, "I16"},
    {26, 1, 4, "I32"},        {27, 1, 8, "I64"},        {28, 1, 8, "F64"},
    {29, 256, 56, "IQ1_M"},   {30, 1, 2, "BF16"},       {34, 256, 54, "TQ1_0"},
    {35, 256, 66, "TQ2_0"},   {39, 32, 17, "MXFP4"},
  }};
  for (const auto& r : table)
    if (r.id == type)
      return ggml_type_size{r.elems, r.bytes, r.name};
  return std::nullopt;
}

// ---- parsing ----------------------------------------------------------------

/// A bounds-checked little-endian cursor; the first failure sticks.
struct gguf_parser {
  std::span<const std::byte> bytes;
  const gguf_limits& limits;
  size_t pos = 0;
  std::string failure;

  bool fail(std::string what) {
    if (failure.empty())
      failure = std::move(what) + " (at byte " + std::to_string(pos) + ")";
    return false;
  }

  bool need(uint64_t n, const char* what) {
    if (n > bytes.size() - pos)
      return fail(std::string("file is truncated: ") + what + " needs " + std::to_string(n)
                  + " bytes, " + std::to_string(bytes.size() - pos) + " left");
    return true;
  }

  template <class T>
  bool read(T& out, const char* what) {
    if (!need(sizeof(T), what))
      return false;
    std::memcpy(&out, bytes.data() + pos, sizeof(T));
    pos += sizeof(T);
    return true;
  }

  bool read_string(std::string_view& out, const char* what) {
    uint64_t len = 0;
    if (!read(len, what))
      return false;
    if (len > limits.max_string_bytes)
      return fail(std::string(what) + " is " + std::to_string(len) + " bytes long, more than the "
                  + std::to_string(limits.max_string_bytes) + " allowed");
    if (!need(len, what))
      return false;
    out = std::string_view(reinterpret_cast<const char*>(bytes.data() + pos), len);
    pos += len;
    return true;
  }

  bool read_value(gguf_kv& kv) {
    uint32_t raw = 0;
    if (!read(raw, "value type"))
      return false;
    if (raw > static_cast<uint32_t>(gguf_type::f64))
      return fail("key " + quoted(kv.key) + " has unknown value type " + std::to_string(raw));
    kv.type = static_cast<gguf_type>(raw);
    if (kv.type == gguf_type::string) {
      std::string_view s;
      if (!read_string(s, "string value"))
        return false;
      kv.strings.push_back(s);
      return true;
    }
    if (kv.type != gguf_type::array) {
      size_t n = scalar_size(kv.type);
      if (!need(n, "value"))
        return false;
      kv.data = bytes.data() + pos;
      pos += n;
      return true;
    }
    if (!read(raw, "array element type"))
      return false;
    if (raw > static_cast<uint32_t>(gguf_type::f64))
      return fail("array " + quoted(kv.key) + " has unknown element type " + std::to_string(raw));
    kv.elem_type = static_cast<gguf_type>(raw);
    if (kv.elem_type == gguf_type::array)
      return fail("array " + quoted(kv.key) + " nests arrays, which GGUF readers do not support");
    if (!read(kv.count, "array length"))
      return false;
    if (kv.count > limits.max_array_elems)
      return fail("array " + quoted(kv.key) + " has " + std::to_string(kv.count)
                  + " elements, more than the " + std::to_string(limits.max_array_elems)
                  + " allowed");
    if (kv.elem_type == gguf_type::string) {
      // Every string takes at least its 8-byte length: refuse before reserving.
      if (!need(kv.count * 8, "string array"))
        return false;
      kv.strings.reserve(kv.count);
      for (uint64_t i = 0; i < kv.count; ++i) {
        std::string_view s;
        if (!read_string(s, "array string"))
          return false;
        kv.strings.push_back(s);
      }
      return true;
    }
    uint64_t n = kv.count * scalar_size(kv.elem_type);
    if (!need(n, "array data"))
      return false;
    kv.data = bytes.data() + pos;
    pos += n;
    return true;
  }

  bool parse(gguf_file& f) {
    uint32_t magic = 0;
    if (!read(magic, "magic"))
      return false;
    if (magic != gguf_magic)
      return fail("not a GGUF file: the magic is not \"GGUF\"");
    if (!read(f.version_, "version"))
      return false;
    if (f.version_ == 1)
      return fail("GGUF version 1 is not supported (only 2 and 3): re-convert the model");
    if (f.version_ != 2 && f.version_ != 3)
      return fail("unknown GGUF version " + std::to_string(f.version_) + " (supported: 2, 3)");
    uint64_t n_tensors = 0, n_kv = 0;
    if (!read(n_tensors, "tensor count") || !read(n_kv, "metadata count"))
      return false;
    if (n_tensors > limits.max_tensors)
      return fail(std::to_string(n_tensors) + " tensors is more than the "
                  + std::to_string(limits.max_tensors) + " allowed");
    if (n_kv > limits.max_kv)
      return fail(std::to_string(n_kv) + " metadata pairs is more than the "
                  + std::to_string(limits.max_kv) + " allowed");

    std::unordered_set<std::string_view> seen;
    f.kvs_.reserve(n_kv);
    for (uint64_t i = 0; i < n_kv; ++i) {
      gguf_kv kv;
      if (!read_string(kv.key, "metadata key"))
        return false;
      if (!seen.insert(kv.key).second)
        return fail("metadata key " + quoted(kv.key) + " appears twice");
      if (!read_value(kv))
        return false;
      f.kvs_.push_back(std::move(kv));
    }

    if (const gguf_kv* a = f.find("general.alignment")) {
      if (a->type != gguf_type::u32)
        return fail("general.alignment must be a u32, not " + std::string(to_string(a->type)));
      uint32_t v = load<uint32_t>(a->data);
      if (v == 0 || (v & (v - 1)) != 0 || v > 65536)
        return fail("general.alignment " + std::to_string(v)
                    + " is not a power of two in [1, 65536]");
      f.alignment_ = v;
    } else {
      f.alignment_ = default_alignment;
    }

    seen.clear();
    f.tensors_.reserve(n_tensors);
    for (uint64_t i = 0; i < n_tensors; ++i) {
      gguf_tensor t;
      if (!read_string(t.name, "tensor name"))
        return false;
      if (!seen.insert(t.name).second)
        return fail("tensor " + quoted(t.name) + " appears twice");
      uint32_t n_dims = 0;
      if (!read(n_dims, "tensor dimension count"))
        return false;
      if (n_dims == 0 || n_dims > limits.max_dims)
        return fail("tensor " + quoted(t.name) + " has " + std::to_string(n_dims)
                    + " dimensions (allowed: 1-" + std::to_string(limits.max_dims) + ")");
      t.ne.resize(n_dims);
      t.n_elements = 1;
      for (uint32_t d = 0; d < n_dims; ++d) {
        if (!read(t.ne[d], "tensor dimension"))
          return false;
        if (t.ne[d] == 0 || t.ne[d] > limits.max_dim)
          return fail("tensor " + quoted(t.name) + " has dimension " + std::to_string(d)
                      + " of size " + std::to_string(t.ne[d]));
        if (t.n_elements > std::numeric_limits<uint64_t>::max() / t.ne[d])
          return fail("tensor " + quoted(t.name) + " has too many elements");
        t.n_elements *= t.ne[d];
      }
      if (!read(t.type, "tensor type") || !read(t.offset, "tensor offset"))
        return false;
      auto info = ggml_type_info(t.type);
      if (!info)
        return fail("tensor " + quoted(t.name) + " has unknown ggml type "
                    + std::to_string(t.type));
      if (t.ne[0] % info->block_elems != 0)
        return fail("tensor " + quoted(t.name) + " of type " + std::string(info->name)
                    + " has rows of " + std::to_string(t.ne[0])
                    + " elements, not a multiple of its block size "
                    + std::to_string(info->block_elems));
      uint64_t blocks = t.n_elements / info->block_elems;
      if (blocks > std::numeric_limits<uint64_t>::max() / info->block_bytes)
        return fail("tensor " + quoted(t.name) + " is too large");
      t.n_bytes = blocks * info->block_bytes;
      if (t.offset % f.alignment_ != 0)
        return fail("tensor " + quoted(t.name) + " has offset " + std::to_string(t.offset)
                    + ", not a multiple of the alignment " + std::to_string(f.alignment_));
      f.tensors_.push_back(std::move(t));
    }

    uint64_t data_start = (pos + f.alignment_ - 1) / f.alignment_ * f.alignment_;
    uint64_t data_size = data_start <= bytes.size() ? bytes.size() - data_start : 0;
    for (auto& t : f.tensors_) {
      if (t.offset > data_size || t.n_bytes > data_size - t.offset)
        return fail(
          "tensor " + quoted(t.name) + " (" + std::to_string(t.n_bytes) + " bytes at data offset "
          + std::to_string(t.offset)
          + ") lies beyond the end of the file: the file is truncated or the offset is wrong");
      t.data = bytes.data() + data_start + t.offset;
    }
    // Tensors must not overlap (llama.cpp even requires them back to back).
    std::vector<const gguf_tensor*> order;
    order.reserve(f.tensors_.size());
    for (const auto& t : f.tensors_)
      order.push_back(&t);
    std::sort(order.begin(), order.end(),
              [](const gguf_tensor* a, const gguf_tensor* b) { return a->offset < b->offset; });
    for (size_t i = 1; i < order.size(); ++i)
      if (order[i - 1]->offset + order[i - 1]->n_bytes > order[i]->offset)
        return fail("tensors " + quoted(order[i - 1]->name) + " and " + quoted(order[i]->name)
                    + " overlap");
    return true;
  }
};

core::result<std::shared_ptr<const gguf_file>> gguf_file::parse(std::span<const std::byte> bytes,
                                                                const gguf_limits& limits) {
  std::shared_ptr<gguf_file> f(new gguf_file());
  f->bytes_ = bytes;
  gguf_parser p{bytes, limits, 0, {}};
  if (!p.parse(*f))
    return core::error{errc::corrupt_data, p.failure};
  return std::shared_ptr<const gguf_file>(std::move(f));
}

core::result<std::shared_ptr<const gguf_file>> gguf_file::open(const std::string& path,
                                                               const gguf_limits& limits) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return core::error{errc::corrupt_data, path + ": cannot open: " + std::strerror(errno)};
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return core::error{errc::corrupt_data, path + ": not a regular file"};
  }
  size_t size = static_cast<size_t>(st.st_size);
  void* map = nullptr;
  if (size > 0) {
    map = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      return core::error{errc::corrupt_data, path + ": cannot map: " + std::strerror(e)};
    }
  }
  ::close(fd);
  auto bytes = std::span<const std::byte>(static_cast<const std::byte*>(map), size);
  auto parsed = parse(bytes, limits);
  if (!parsed) {
    if (map)
      munmap(map, size);
    return core::error{errc::corrupt_data, path + ": " + parsed.err().message};
  }
  auto* f = const_cast<gguf_file*>(parsed->get());
  f->map_ = map;
  f->map_size_ = size;
  return parsed;
}

gguf_file::~gguf_file() {
  if (map_)
    munmap(map_, map_size_);
}

const gguf_kv* gguf_file::find(std::string_view key) const noexcept {
  for (const auto& kv : kvs_)
    if (kv.key == key)
      return &kv;
  return nullptr;
}

const gguf_tensor* gguf_file::tensor(std::string_view name) const noexcept {
  for (const auto& t : tensors_)
    if (t.name == name)
      return &t;
  return nullptr;
}

namespace {

core::error missing(std::string_view key) {
  return core::error{errc::corrupt_data, "metadata key " + std::string(key) + " is missing"};
}

core::error wrong_type(const gguf_kv& kv, const char* expected) {
  std::string have(to_string(kv.type));
  if (kv.is_array())
    have = "array of " + std::string(to_string(kv.elem_type));
  return core::error{errc::corrupt_data, "metadata key " + std::string(kv.key) + " is " + have
                                           + ", expected " + expected};
}

/// The value of a `find_*` look-up, or "missing" when the key is absent.
template <class T>
core::result<T> required(core::result<std::optional<T>> r, std::string_view key) {
  if (!r)
    return std::move(r).err();
  if (!*r)
    return missing(key);
  return std::move(**r);
}

} // namespace

core::result<std::optional<uint64_t>> gguf_file::find_uint(std::string_view key) const {
  const gguf_kv* kv = find(key);
  if (!kv)
    return std::optional<uint64_t>{};
  if (!is_integer(kv->type))
    return wrong_type(*kv, "an integer");
  int64_t v = 0;
  if (!integer_at(kv->type, kv->data, 0, v) || v < 0)
    return core::error{errc::corrupt_data,
                       "metadata key " + std::string(key) + " is negative or too large"};
  return std::optional<uint64_t>{static_cast<uint64_t>(v)};
}

core::result<uint64_t> gguf_file::get_uint(std::string_view key) const {
  return required(find_uint(key), key);
}

core::result<std::optional<double>> gguf_file::find_float(std::string_view key) const {
  const gguf_kv* kv = find(key);
  if (!kv)
    return std::optional<double>{};
  if (!is_integer(kv->type) && kv->type != gguf_type::f32 && kv->type != gguf_type::f64)
    return wrong_type(*kv, "a number");
  return std::optional<double>{number_at(kv->type, kv->data, 0)};
}

core::result<double> gguf_file::get_float(std::string_view key) const {
  return required(find_float(key), key);
}

core::result<std::optional<bool>> gguf_file::find_bool(std::string_view key) const {
  const gguf_kv* kv = find(key);
  if (!kv)
    return std::optional<bool>{};
  if (kv->type != gguf_type::boolean)
    return wrong_type(*kv, "a bool");
  return std::optional<bool>{load<uint8_t>(kv->data) != 0};
}

core::result<bool> gguf_file::get_bool(std::string_view key) const {
  return required(find_bool(key), key);
}

core::result<std::optional<std::string_view>> gguf_file::find_string(std::string_view key) const {
  const gguf_kv* kv = find(key);
  if (!kv)
    return std::optional<std::string_view>{};
  if (kv->type != gguf_type::string)
    return wrong_type(*kv, "a string");
  return std::optional<std::string_view>{kv->strings.front()};
}

core::result<std::string_view> gguf_file::get_string(std::string_view key) const {
  return required(find_string(key), key);
}

core::result<std::span<const std::string_view>> gguf_file::get_strings(std::string_view key) const {
  const gguf_kv* kv = find(key);
  if (!kv)
    return missing(key);
  if (!kv->is_array() || kv->elem_type != gguf_type::string)
    return wrong_type(*kv, "an array of strings");
  return std::span<const std::string_view>(kv->strings);
}

core::result<std::vector<float>> gguf_file::get_floats(std::string_view key) const {
  const gguf_kv* kv = find(key);
  if (!kv)
    return missing(key);
  if (!kv->is_array() || kv->elem_type == gguf_type::string || kv->elem_type == gguf_type::boolean)
    return wrong_type(*kv, "an array of numbers");
  std::vector<float> out(kv->count);
  for (uint64_t i = 0; i < kv->count; ++i)
    out[i] = static_cast<float>(number_at(kv->elem_type, kv->data, i));
  return out;
}

core::result<std::vector<int64_t>> gguf_file::get_ints(std::string_view key) const {
  const gguf_kv* kv = find(key);
  if (!kv)
    return missing(key);
  if (!kv->is_array() || !is_integer(kv->elem_type))
    return wrong_type(*kv, "an array of integers");
  std::vector<int64_t> out(kv->count);
  for (uint64_t i = 0; i < kv->count; ++i)
    if (!integer_at(kv->elem_type, kv->data, i, out[i]))
      return core::error{errc::corrupt_data,
                         "metadata key " + std::string(key) + " holds a value too large for int64"};
  return out;
}

// ---- writing ------------------------------------------------------------------

namespace {

template <class T>
void put(std::vector<std::byte>& out, T v) {
  auto* p = reinterpret_cast<const std::byte*>(&v);
  out.insert(out.end(), p, p + sizeof v);
}

void put_string(std::vector<std::byte>& out, std::string_view s) {
  put<uint64_t>(out, s.size());
  auto* p = reinterpret_cast<const std::byte*>(s.data());
  out.insert(out.end(), p, p + s.size());
}

} // namespace

gguf_writer::gguf_writer(uint32_t alignment) : alignment_(alignment) {
  if (alignment_ != default_alignment)
    set_u32("general.alignment", alignment_);
}

#define SHOAL_GGUF_SETTER(name, ctype, tag)                                                        \
  void gguf_writer::name(std::string key, ctype v) {                                               \
    put_string(kv_bytes_, key);                                                                    \
    put<uint32_t>(kv_bytes_, static_cast<uint32_t>(gguf_type::tag));                               \
    put<ctype>(kv_bytes_, v);                                                                      \
    ++n_kv_;                                                                                       \
  }
SHOAL_GGUF_SETTER(set_u32, uint32_t, u32)
SHOAL_GGUF_SETTER(set_i32, int32_t, i32)
SHOAL_GGUF_SETTER(set_u64, uint64_t, u64)
SHOAL_GGUF_SETTER(set_f32, float, f32)
#undef SHOAL_GGUF_SETTER

void gguf_writer::set_bool(std::string key, bool v) {
  put_string(kv_bytes_, key);
  put<uint32_t>(kv_bytes_, static_cast<uint32_t>(gguf_type::boolean));
  put<uint8_t>(kv_bytes_, v ? 1 : 0);
  ++n_kv_;
}

void gguf_writer::set_string(std::string key, std::string v) {
  put_string(kv_bytes_, key);
  put<uint32_t>(kv_bytes_, static_cast<uint32_t>(gguf_type::string));
  put_string(kv_bytes_, v);
  ++n_kv_;
}

void gguf_writer::set_strings(std::string key, const std::vector<std::string>& v) {
  put_string(kv_bytes_, key);
  put<uint32_t>(kv_bytes_, static_cast<uint32_t>(gguf_type::array));
  put<uint32_t>(kv_bytes_, static_cast<uint32_t>(gguf_type::string));
  put<uint64_t>(kv_bytes_, v.size());
  for (const auto& s : v)
    put_string(kv_bytes_, s);
  ++n_kv_;
}

void gguf_writer::set_f32s(std::string key, const std::vector<float>& v) {
  put_string(kv_bytes_, key);
  put<uint32_t>(kv_bytes_, static_cast<uint32_t>(gguf_type::array));
  put<uint32_t>(kv_bytes_, static_cast<uint32_t>(gguf_type::f32));
  put<uint64_t>(kv_bytes_, v.size());
  for (float x : v)
    put<float>(kv_bytes_, x);
  ++n_kv_;
}

void gguf_writer::set_i32s(std::string key, const std::vector<int32_t>& v) {
  put_string(kv_bytes_, key);
  put<uint32_t>(kv_bytes_, static_cast<uint32_t>(gguf_type::array));
  put<uint32_t>(kv_bytes_, static_cast<uint32_t>(gguf_type::i32));
  put<uint64_t>(kv_bytes_, v.size());
  for (int32_t x : v)
    put<int32_t>(kv_bytes_, x);
  ++n_kv_;
}

void gguf_writer::copy_kv(const gguf_kv& kv) {
  put_string(kv_bytes_, kv.key);
  put<uint32_t>(kv_bytes_, static_cast<uint32_t>(kv.type));
  auto raw = [&](size_t n) { kv_bytes_.insert(kv_bytes_.end(), kv.data, kv.data + n); };
  if (kv.type == gguf_type::string) {
    put_string(kv_bytes_, kv.strings.empty() ? std::string_view() : kv.strings[0]);
  } else if (kv.is_array()) {
    put<uint32_t>(kv_bytes_, static_cast<uint32_t>(kv.elem_type));
    put<uint64_t>(kv_bytes_, kv.count);
    if (kv.elem_type == gguf_type::string)
      for (auto s : kv.strings)
        put_string(kv_bytes_, s);
    else
      raw(kv.count * scalar_size(kv.elem_type));
  } else {
    raw(scalar_size(kv.type));
  }
  ++n_kv_;
}

core::result<bool> gguf_writer::add_tensor(std::string name, std::vector<uint64_t> ne,
                                           uint32_t type, std::vector<std::byte> data) {
  auto info = ggml_type_info(type);
  if (!info)
    return core::error{errc::corrupt_data,
                       "tensor " + name + ": unknown ggml type " + std::to_string(type)};
  if (ne.empty() || ne.size() > 4)
    return core::error{errc::corrupt_data, "tensor " + name + ": needs 1-4 dimensions"};
  uint64_t n = 1;
  for (auto d : ne)
    n *= d;
  if (ne[0] % info->block_elems != 0)
    return core::error{errc::corrupt_data, "tensor " + name + ": rows of " + std::to_string(ne[0])
                                             + " elements are not a multiple of the block size "
                                             + std::to_string(info->block_elems)};
  if (n / info->block_elems * info->block_bytes != data.size())
    return core::error{errc::corrupt_data,
                       "tensor " + name + ": " + std::to_string(data.size()) + " bytes given, "
                         + std::to_string(n / info->block_elems * info->block_bytes) + " expected"};
  tensors_.push_back({std::move(name), std::move(ne), type, std::move(data)});
  return true;
}

std::vector<std::byte> gguf_writer::bytes() const {
  std::vector<std::byte> out;
  put<uint32_t>(out, gguf_magic);
  put<uint32_t>(out, 3);
  put<uint64_t>(out, tensors_.size());
  put<uint64_t>(out, n_kv_);
  out.insert(out.end(), kv_bytes_.begin(), kv_bytes_.end());
  auto align = [&](uint64_t x) { return (x + alignment_ - 1) / alignment_ * alignment_; };
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    put_string(out, t.name);
    put<uint32_t>(out, static_cast<uint32_t>(t.ne.size()));
    for (auto d : t.ne)
      put<uint64_t>(out, d);
    put<uint32_t>(out, t.type);
    put<uint64_t>(out, offset);
    offset = align(offset + t.data.size());
  }
  out.resize(align(out.size()));
  for (const auto& t : tensors_) {
    out.insert(out.end(), t.data.begin(), t.data.end());
    out.resize(align(out.size()));
  }
  return out;
}

core::result<bool> gguf_writer::write(const std::string& path) const {
  auto data = bytes();
  std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f)
    return core::error{errc::corrupt_data, tmp + ": cannot create: " + std::strerror(errno)};
  bool ok = std::fwrite(data.data(), 1, data.size(), f) == data.size();
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return core::error{errc::corrupt_data, path + ": cannot write: " + std::strerror(errno)};
  }
  return true;
}

} // namespace shoal::engine
