#pragma once
/// @file Approximate nearest-neighbour index over pattern centroids (hnswlib
/// HNSW graph, Malkov & Yashunin 2018), cosine similarity on L2-normalised
/// vectors. Vectors are stored int8-quantized per vector (the caller's
/// int8_ops, kernels::quantize_i8 in Shoal: 4 + dim bytes each instead of
/// 4·dim), so
/// similarities are approximate: |error| <= ~0.01 for unit vectors of
/// dimension 384 (see kernels tests); the caller keeps exact f32 vectors
/// where it needs them (the pattern bank keeps them in LMDB).
///
/// Thread-safety: not thread-safe. hnswlib races when `add` and `search` run
/// concurrently; the owner (the router actor) calls it from one thread at a
/// time. Labels are pattern ids.
///
/// Removal (`remove`, and replacing a vector: `add` of a known id) is
/// hnswlib's markDelete: the vector stays in the graph as a waypoint and
/// keeps its slot (hnswlib 0.6 cannot reuse slots), but searches, `get`,
/// `contains` and `size` no longer see it; the mark is part of the saved
/// file, so a loaded index keeps its removals. Slots of removed vectors are
/// only given back by building a new index (`removed()` counts them;
/// pattern_bank::open rebuilds when they outnumber the live ones).

#include "core/error.hpp"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <utility>
#include <vector>

namespace shoal::store {

/// HNSW parameters (config keys `index.*`, documented in node/config.cpp).
struct index_config {
  uint32_t m = 16;                   ///< config index.m
  uint32_t ef_construction = 100;    ///< config index.ef_construction
  uint32_t ef_search = 48;           ///< config index.ef_search (raised to k when smaller)
  uint64_t initial_capacity = 16384; ///< config index.initial_capacity
};

/// The int8 arithmetic the index stores and compares vectors with,
/// supplied by its owner (router/ passes kernels::quantize_i8 and
/// kernels::dot_i8, dispatched to SIMD at run time). Both must be pure and
/// callable from any thread.
struct int8_ops {
  /// Quantizes x ([n] f32) into q ([n] int8); returns the scale s with
  /// x ≈ s·q.
  float (*quantize)(std::span<const float> x, std::span<signed char> q) noexcept = nullptr;
  /// Σ a_i·b_i over [n] int8.
  int32_t (*dot)(std::span<const signed char> a, std::span<const signed char> b) noexcept = nullptr;
};

/// One search hit.
struct index_hit {
  uint64_t id;
  float similarity; ///< cosine similarity, 1 - distance
};

class pattern_index {
public:
  /// An empty index of `dim`-dimensional vectors. @pre ops' functions set.
  pattern_index(uint32_t dim, index_config cfg, int8_ops ops);
  ~pattern_index();
  pattern_index(pattern_index&&) noexcept;
  pattern_index& operator=(pattern_index&&) noexcept;

  /// Adds a vector, or for an id added before (removed or not) replaces its
  /// vector and makes it visible again: the id moves to a fresh slot,
  /// inserted like a new vector, and its old slot is removed (markDelete).
  /// Not hnswlib's in-place update (addPoint on a known label calls
  /// updatePoint, which repairs every neighbour's links: ~1.6 ms per update
  /// at 10,000 × 384 against ~0.1 ms per insertion). @pre v.size() == dim.
  /// Grows the capacity when full. Errors: `errc::internal` when hnswlib
  /// throws (the id may then be removed).
  core::error add(uint64_t id, std::span<const float> v);

  /// Removes `id` from searches (hnswlib markDelete; see the file comment).
  /// @returns whether it was present (false for an unknown or already
  /// removed id). Never throws.
  bool remove(uint64_t id) noexcept;

  /// The k nearest vectors to `q`, most similar first; never a removed id
  /// (with many removals it may return fewer than k). @pre q.size() == dim.
  std::vector<index_hit> search(std::span<const float> q, size_t k) const;

  /// The stored vector of `id` dequantized (scale · int8 values: within half
  /// a quantization step of what was added), or an empty vector when unknown
  /// or removed.
  std::vector<float> get(uint64_t id) const;

  /// Whether `id` is in the index (added and not removed).
  bool contains(uint64_t id) const;

  /// Number of vectors searches can find (removed ones excluded).
  size_t size() const noexcept;

  /// Removed vectors still holding a slot in the graph.
  size_t removed() const noexcept;

  uint32_t dim() const noexcept;

  /// Writes the index, with its removal marks, to `path` atomically
  /// (temporary file + rename).
  /// @returns the XXH3-64 hash of the written bytes, to be checked by `load`.
  core::result<uint64_t> save(const std::filesystem::path& path) const;

  /// Loads an index saved by `save`, after checking the file's hash and size,
  /// so a corrupt or foreign file is refused instead of read.
  /// Errors: `errc::not_found` (no file), `errc::corrupt_data` (hash, size or
  /// dimension mismatch, or hnswlib refused it).
  static core::result<pattern_index> load(const std::filesystem::path& path, uint32_t dim,
                                          index_config cfg, int8_ops ops, uint64_t expected_hash);

  /// XXH3-64 of a file's bytes. Errors: `errc::not_found`, `errc::storage_failure`.
  static core::result<uint64_t> hash_file(const std::filesystem::path& path);

  struct impl;

private:
  explicit pattern_index(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace shoal::store
