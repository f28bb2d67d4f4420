#include "store/archive.hpp"

#include "store/bytes.hpp"

#include <zstd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <iterator>
#include <memory>
#include <unistd.h>

namespace shoal::store {

namespace {

constexpr char magic[8] = {'S', 'H', 'O', 'A', 'L', 'A', 'R', 'C'};
constexpr uint32_t format_version = 1;
/// Largest uncompressed content read back: a guard against a corrupt header
/// asking for an absurd allocation.
constexpr uint64_t max_content = 4ull << 30;

core::error os_error(const std::filesystem::path& f, const char* what) {
  return core::error{errc::storage_failure,
                     "archive " + f.string() + ": " + what + ": " + std::strerror(errno)};
}

struct fd_closer {
  int fd;
  ~fd_closer() {
    if (fd >= 0)
      ::close(fd);
  }
};

} // namespace

core::error write_archive(const std::filesystem::path& file, table source,
                          std::span<const archive_record> records, int level) {
  using bytes::put;
  std::string content;
  put<uint32_t>(content, static_cast<uint32_t>(source));
  put<uint64_t>(content, records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    if (i > 0 && records[i].key <= records[i - 1].key)
      return core::error{errc::invalid_argument, "archive " + file.string()
                                                   + ": keys must ascend (record "
                                                   + std::to_string(i) + ")"};
    put<uint64_t>(content, records[i].key);
    put<uint32_t>(content, static_cast<uint32_t>(records[i].value.size()));
    content += records[i].value;
  }
  std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> cctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
  if (!cctx)
    return core::error{errc::storage_failure, "archive " + file.string() + ": out of memory"};
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_checksumFlag, 1);
  std::string out(sizeof magic + 4, '\0');
  std::memcpy(out.data(), magic, sizeof magic);
  {
    std::string v;
    put<uint32_t>(v, format_version);
    std::memcpy(out.data() + sizeof magic, v.data(), 4);
  }
  const size_t head = out.size();
  out.resize(head + ZSTD_compressBound(content.size()));
  const size_t n = ZSTD_compress2(cctx.get(), out.data() + head, out.size() - head, content.data(),
                                  content.size());
  if (ZSTD_isError(n))
    return core::error{errc::storage_failure,
                       "archive " + file.string() + ": zstd: " + ZSTD_getErrorName(n)};
  out.resize(head + n);
  // Whole file or none: write a temporary, make it durable, rename.
  auto tmp = file;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0)
    return os_error(tmp, "open");
  {
    fd_closer closer{fd};
    for (size_t off = 0; off < out.size();) {
      ssize_t w = ::write(fd, out.data() + off, out.size() - off);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0)
        return os_error(tmp, "write");
      off += static_cast<size_t>(w);
    }
    if (::fsync(fd) != 0)
      return os_error(tmp, "fsync");
  }
  if (::rename(tmp.c_str(), file.c_str()) != 0)
    return os_error(file, "rename");
  // The rename itself is durable once the directory is synced.
  int dfd = ::open(file.parent_path().empty() ? "." : file.parent_path().c_str(),
                   O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return {};
}

core::result<archive_segment> read_archive(const std::filesystem::path& file) {
  using bytes::get;
  std::ifstream in(file, std::ios::binary);
  if (!in)
    return os_error(file, "open");
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad())
    return os_error(file, "read");
  auto corrupt = [&](const std::string& why) {
    return core::error{errc::corrupt_data, "archive " + file.string() + ": " + why};
  };
  if (data.size() < sizeof magic + 4 || std::memcmp(data.data(), magic, sizeof magic) != 0)
    return corrupt("not a Shoal archive (bad magic)");
  std::string_view rest(data);
  rest.remove_prefix(sizeof magic);
  uint32_t version = 0;
  get(rest, version);
  if (version != format_version)
    return corrupt("unknown format version " + std::to_string(version));
  const size_t frame = ZSTD_findFrameCompressedSize(rest.data(), rest.size());
  if (ZSTD_isError(frame))
    return corrupt(std::string("zstd: ") + ZSTD_getErrorName(frame));
  if (frame != rest.size())
    return corrupt(std::to_string(rest.size() - frame) + " bytes after the compressed frame");
  const unsigned long long size = ZSTD_getFrameContentSize(rest.data(), rest.size());
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN)
    return corrupt("zstd frame without a content size");
  if (size > max_content)
    return corrupt("content of " + std::to_string(size) + " bytes is beyond the "
                   + std::to_string(max_content) + " a segment may hold");
  std::string content(size, '\0');
  const size_t n = ZSTD_decompress(content.data(), content.size(), rest.data(), rest.size());
  if (ZSTD_isError(n))
    return corrupt(std::string("zstd: ") + ZSTD_getErrorName(n)); // includes checksum errors
  if (n != size)
    return corrupt("content is shorter than its frame says");
  std::string_view c(content);
  archive_segment seg;
  uint32_t source = 0;
  uint64_t count = 0;
  if (!get(c, source) || !get(c, count))
    return corrupt("truncated header");
  if (source > static_cast<uint32_t>(table::policies))
    return corrupt("unknown table id " + std::to_string(source));
  seg.source = static_cast<table>(source);
  // Each record takes at least 12 bytes: a count beyond that is a lie.
  if (count > c.size() / 12)
    return corrupt("record count " + std::to_string(count) + " exceeds the content");
  seg.records.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    archive_record r;
    uint32_t len = 0;
    if (!get(c, r.key) || !get(c, len) || len > c.size())
      return corrupt("record " + std::to_string(i) + " is truncated");
    if (i > 0 && r.key <= seg.records.back().key)
      return corrupt("record " + std::to_string(i) + " is out of key order");
    r.value.assign(c.substr(0, len));
    c.remove_prefix(len);
    seg.records.push_back(std::move(r));
  }
  if (!c.empty())
    return corrupt(std::to_string(c.size()) + " bytes after the last record");
  return seg;
}

std::string archive_file_name(uint64_t first, uint64_t last) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%016llx-%016llx.shoalarc", static_cast<unsigned long long>(first),
                static_cast<unsigned long long>(last));
  return buf;
}

bool parse_archive_file_name(std::string_view name, uint64_t& first, uint64_t& last) {
  constexpr std::string_view ext = ".shoalarc";
  if (name.size() != 16 + 1 + 16 + ext.size() || name[16] != '-' || name.substr(33) != ext)
    return false;
  auto hex = [](std::string_view s, uint64_t& out) {
    out = 0;
    for (char ch : s) {
      int v = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
      if (v < 0)
        return false;
      out = out << 4 | static_cast<uint64_t>(v);
    }
    return true;
  };
  return hex(name.substr(0, 16), first) && hex(name.substr(17, 16), last) && first <= last;
}

} // namespace shoal::store
