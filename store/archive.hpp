#pragma once
/// @file Archive segments: records moved out of an LMDB table into one
/// compressed, checksummed file per archiving run (the witness log's
/// archive; DESIGN.md, Storage: "archives (zstd)").
///
/// File format (version 1):
///   bytes 0..7   magic "SHOALARC"
///   bytes 8..11  u32 LE format version (1)
///   rest         one zstd frame (RFC 8878) with its content checksum (XXH64
///                of the uncompressed content, checked on every read) whose
///                content is:
///                  u32 LE table id (store::table), u64 LE record count,
///                  then per record: u64 LE key, u32 LE value length, value.
/// Records are in ascending key order. A segment is written to `<file>.tmp`,
/// fsync'd and renamed into place, so a crash leaves either the whole file or
/// none (an orphaned `.tmp` is ignored and overwritten by the next run).
///
/// Thread-safety: the functions share no state; a file must not be written
/// by two callers at once.

#include "core/error.hpp"
#include "store/environment.hpp"

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace shoal::store {

struct archive_record {
  uint64_t key = 0;
  std::string value;
};

/// The records of one segment.
struct archive_segment {
  table source = table::witness; ///< the table the records came from
  std::vector<archive_record> records;
};

/// Writes `records` (ascending keys) from table `source` as a segment at
/// `file` (zstd level `level`, 1-19). Errors: errc::invalid_argument for
/// unsorted keys, errc::storage_failure naming the file and the OS or zstd
/// error.
core::error write_archive(const std::filesystem::path& file, table source,
                          std::span<const archive_record> records, int level = 3);

/// Reads a whole segment. Errors: errc::corrupt_data naming the file and the
/// problem (not an archive, unknown version, zstd or checksum error,
/// truncated or inconsistent content); errc::storage_failure when it cannot
/// be read.
core::result<archive_segment> read_archive(const std::filesystem::path& file);

/// The segment file name for keys [first, last]: "<first>-<last>.shoalarc",
/// both as 16 hex digits, so names sort by key.
std::string archive_file_name(uint64_t first, uint64_t last);

/// Parses a segment file name; false for any other name.
bool parse_archive_file_name(std::string_view name, uint64_t& first, uint64_t& last);

} // namespace shoal::store
