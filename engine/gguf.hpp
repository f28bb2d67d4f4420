#pragma once
/// @file GGUF files: a validating reader over a read-only memory map (tensors
/// are zero-copy views into the map) and a writer.
///
/// Format: llama.cpp's GGUF spec (ggml/docs/gguf.md; versions 2 and 3, little
/// endian): magic "GGUF", u32 version, u64 tensor count, u64 metadata count,
/// the metadata key/value pairs, the tensor infos (name, u32 n_dims, u64 ne[],
/// u32 ggml type, u64 offset), padding to `general.alignment` (default 32),
/// then the tensor data; every tensor offset is relative to the start of the
/// data and a multiple of the alignment.
///
/// Caveats: the reader trusts nothing in the file. Every length, count,
/// offset, dimension and type is checked against the file size and sane
/// limits before use; a bad file gives an `error` naming the problem and the
/// byte offset, never a crash (fuzzed: engine/gguf.fuzz.cpp). Tensor types
/// are checked against ggml's table of type sizes; whether the engine can
/// compute with a type is the model loader's question.
///
/// Thread-safety: a `gguf_file` is immutable after `open`/`parse`; any number
/// of threads may read it. Views stay valid while the gguf_file lives.

#include "core/error.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::engine {

/// GGUF metadata value types (the spec's gguf_metadata_value_type).
enum class gguf_type : uint32_t {
  u8 = 0,
  i8 = 1,
  u16 = 2,
  i16 = 3,
  u32 = 4,
  i32 = 5,
  f32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  u64 = 10,
  i64 = 11,
  f64 = 12,
};

/// "u8", "i8", ..., "string", "array", ... (one word).
std::string_view to_string(gguf_type t) noexcept;

/// One metadata key/value pair; every view points into the file's bytes.
struct gguf_kv {
  std::string_view key;
  gguf_type type = gguf_type::u8;
  /// For arrays: the element type (never array: nested arrays are refused).
  gguf_type elem_type = gguf_type::u8;
  /// Number of elements: 1 for scalars, the length for arrays.
  uint64_t count = 1;
  /// The raw little-endian payload of a number / bool scalar or of a number
  /// array (count · size of elem_type bytes, unaligned).
  const std::byte* data = nullptr;
  /// The string, or the strings of a string array.
  std::vector<std::string_view> strings;

  bool is_array() const noexcept { return type == gguf_type::array; }
  /// The scalar type, or the element type of an array.
  gguf_type value_type() const noexcept { return is_array() ? elem_type : type; }
};

/// A tensor's description and its bytes in the map.
struct gguf_tensor {
  std::string_view name;
  uint32_t type = 0;        ///< ggml_type id (0 F32, 1 F16, 2 Q4_0, 8 Q8_0, ...)
  std::vector<uint64_t> ne; ///< ggml order: ne[0] is the contiguous (row) dimension
  uint64_t offset = 0;      ///< from the start of the data section
  uint64_t n_elements = 0;  ///< Π ne
  uint64_t n_bytes = 0;     ///< ggml_nbytes for the type
  const std::byte* data = nullptr;
};

/// Size facts of a ggml type: elements and bytes per block; nullopt for ids
/// ggml does not define (or defines as removed).
struct ggml_type_size {
  uint32_t block_elems;
  uint32_t block_bytes;
  std::string_view name;
};
std::optional<ggml_type_size> ggml_type_info(uint32_t type) noexcept;

/// Limits the reader enforces (anything larger is "absurd" and refused).
struct gguf_limits {
  uint64_t max_tensors = 1u << 16;
  uint64_t max_kv = 1u << 16;
  uint64_t max_string_bytes = 1u << 20; ///< one string (chat templates are ~10 KiB)
  uint64_t max_array_elems = 1u << 24;  ///< vocabularies are ~10^5
  uint32_t max_dims = 4;                ///< GGML_MAX_DIMS
  uint64_t max_dim = 1ull << 40;
};

/// A parsed GGUF file.
class gguf_file {
public:
  /// Maps `path` read-only and parses it. Errors: cannot open / map, and
  /// every format error of `parse`, prefixed with the path.
  static core::result<std::shared_ptr<const gguf_file>> open(const std::string& path,
                                                             const gguf_limits& limits = {});

  /// Parses bytes in memory (not copied: `bytes` must outlive the result).
  static core::result<std::shared_ptr<const gguf_file>> parse(std::span<const std::byte> bytes,
                                                              const gguf_limits& limits = {});

  ~gguf_file();
  gguf_file(const gguf_file&) = delete;
  gguf_file& operator=(const gguf_file&) = delete;

  uint32_t version() const noexcept { return version_; }
  uint32_t alignment() const noexcept { return alignment_; }
  std::span<const gguf_kv> metadata() const noexcept { return kvs_; }
  std::span<const gguf_tensor> tensors() const noexcept { return tensors_; }
  /// Size of the whole file in bytes.
  size_t size() const noexcept { return bytes_.size(); }

  /// The pair with this key, or nullptr.
  const gguf_kv* find(std::string_view key) const noexcept;
  /// The tensor with this name, or nullptr.
  const gguf_tensor* tensor(std::string_view name) const noexcept;

  // Typed look-ups. Each returns an error naming the key when it is missing
  // (the `get_*` forms) or has another type; the `find_*` forms return
  // nullopt when the key is absent and an error only for a wrong type.

  /// Any integer type (u8..i64) with a value in [0, 2^63); bool is refused.
  core::result<uint64_t> get_uint(std::string_view key) const;
  core::result<std::optional<uint64_t>> find_uint(std::string_view key) const;
  /// f32, f64 or any integer type.
  core::result<double> get_float(std::string_view key) const;
  core::result<std::optional<double>> find_float(std::string_view key) const;
  core::result<bool> get_bool(std::string_view key) const;
  core::result<std::optional<bool>> find_bool(std::string_view key) const;
  core::result<std::string_view> get_string(std::string_view key) const;
  core::result<std::optional<std::string_view>> find_string(std::string_view key) const;
  /// An array of strings.
  core::result<std::span<const std::string_view>> get_strings(std::string_view key) const;
  /// An array of numbers (any numeric element type) converted to float / int64.
  core::result<std::vector<float>> get_floats(std::string_view key) const;
  core::result<std::vector<int64_t>> get_ints(std::string_view key) const;

private:
  gguf_file() = default;
  friend struct gguf_parser;

  std::span<const std::byte> bytes_;
  void* map_ = nullptr; ///< mmap base when opened from a file
  size_t map_size_ = 0;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  std::vector<gguf_kv> kvs_;
  std::vector<gguf_tensor> tensors_;
};

/// Builds a GGUF v3 file in memory. Metadata keeps insertion order; tensors
/// are laid out in insertion order at `alignment`. Not thread-safe.
class gguf_writer {
public:
  explicit gguf_writer(uint32_t alignment = 32);

  void set_u32(std::string key, uint32_t v);
  void set_i32(std::string key, int32_t v);
  void set_u64(std::string key, uint64_t v);
  void set_f32(std::string key, float v);
  void set_bool(std::string key, bool v);
  void set_string(std::string key, std::string v);
  void set_strings(std::string key, const std::vector<std::string>& v);
  void set_f32s(std::string key, const std::vector<float>& v);
  void set_i32s(std::string key, const std::vector<int32_t>& v);
  /// Copies a pair read from another file (any type), e.g. to rewrite a
  /// model's tensors with its metadata unchanged.
  void copy_kv(const gguf_kv& kv);

  /// Adds a tensor: `ne` in ggml order, `type` a ggml type id, `data` exactly
  /// ggml_nbytes bytes. Returns an error for an unknown type, a row length
  /// that is not a multiple of the block size, or a size mismatch.
  core::result<bool> add_tensor(std::string name, std::vector<uint64_t> ne, uint32_t type,
                                std::vector<std::byte> data);

  /// The file's bytes.
  std::vector<std::byte> bytes() const;
  /// Writes the file (to `path`.tmp, then renames). Error text names the path.
  core::result<bool> write(const std::string& path) const;

private:
  struct tensor {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type;
    std::vector<std::byte> data;
  };
  uint32_t alignment_;
  uint64_t n_kv_ = 0;
  std::vector<std::byte> kv_bytes_;
  std::vector<tensor> tensors_;
};

} // namespace shoal::engine
