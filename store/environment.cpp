#include "store/environment.hpp"
#include "store/upgrade.hpp"

#include "proto/records.hpp"

#include <lmdb.h>

#include <array>
#include <mutex>
#include <shared_mutex>
#include <system_error>

namespace shoal::store {

namespace {

constexpr std::array<std::string_view, 9> table_names{
  "patterns",     "witness",          "meta", "kv_spill", "sessions", "policies",
  "router_state", "federation_state", "seal"};

core::error lmdb_error(std::string_view what, int rc) {
  return core::error{errc::storage_failure,
                     std::string("LMDB ") + std::string(what) + ": " + mdb_strerror(rc)};
}

MDB_val as_val(std::string_view s) {
  return {s.size(), const_cast<char*>(s.data())};
}

std::string_view as_view(const MDB_val& v) {
  return {static_cast<const char*>(v.mv_data), v.mv_size};
}

} // namespace

struct environment::impl {
  store_config cfg;
  MDB_env* env = nullptr;
  std::array<MDB_dbi, table_names.size()> dbis{};
  uint64_t map_bytes = 0;
  /// Shared by every transaction; exclusive while the map is resized
  /// (mdb_env_set_mapsize requires that no transaction is active).
  mutable std::shared_mutex resize_mtx;

  ~impl() {
    if (env != nullptr) {
      mdb_env_sync(env, 1);
      mdb_env_close(env);
    }
  }
};

std::string_view to_string(table t) noexcept {
  return table_names[static_cast<size_t>(t)];
}

std::string u64_key(uint64_t x) {
  std::string k(8, '\0');
  for (int i = 7; i >= 0; --i) {
    k[static_cast<size_t>(i)] = static_cast<char>(x & 0xff);
    x >>= 8;
  }
  return k;
}

std::optional<uint64_t> parse_u64_key(std::string_view key) {
  if (key.size() != 8)
    return std::nullopt;
  uint64_t x = 0;
  for (char c : key)
    x = (x << 8) | static_cast<unsigned char>(c);
  return x;
}

core::result<std::shared_ptr<environment>> environment::open(const store_config& cfg) {
  std::error_code ec;
  std::filesystem::create_directories(cfg.data_dir, ec);
  if (ec)
    return core::error{errc::storage_failure, "cannot create data directory "
                                                + cfg.data_dir.string() + ": " + ec.message()};
  auto p = std::make_unique<impl>();
  p->cfg = cfg;
  p->map_bytes = cfg.map_bytes;
  if (int rc = mdb_env_create(&p->env); rc != 0)
    return lmdb_error("env_create", rc);
  mdb_env_set_maxdbs(p->env, 16);
  mdb_env_set_mapsize(p->env, p->map_bytes);
  auto path = (cfg.data_dir / "shoal.lmdb");
  std::filesystem::create_directories(path, ec);
  if (int rc = mdb_env_open(p->env, path.c_str(), MDB_NOTLS, 0644); rc != 0) {
    auto err = lmdb_error("open " + path.string(), rc);
    mdb_env_close(p->env);
    p->env = nullptr;
    return err;
  }
  // A map grown by an earlier run is larger than the configured one: keep it.
  MDB_envinfo info;
  mdb_env_info(p->env, &info);
  p->map_bytes = std::max<uint64_t>(p->map_bytes, info.me_mapsize);
  MDB_txn* txn = nullptr;
  if (int rc = mdb_txn_begin(p->env, nullptr, 0, &txn); rc != 0)
    return lmdb_error("txn_begin", rc);
  for (size_t i = 0; i < table_names.size(); ++i) {
    std::string name(table_names[i]);
    if (int rc = mdb_dbi_open(txn, name.c_str(), MDB_CREATE, &p->dbis[i]); rc != 0) {
      mdb_txn_abort(txn);
      return lmdb_error("open table " + name, rc);
    }
  }
  if (int rc = mdb_txn_commit(txn); rc != 0)
    return lmdb_error("commit", rc);
  return std::shared_ptr<environment>(new environment(std::move(p)));
}

environment::environment(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

environment::~environment() = default;

const std::filesystem::path& environment::data_dir() const noexcept {
  return impl_->cfg.data_dir;
}

core::error environment::write(const std::vector<write_op>& ops) {
  for (;;) {
    int rc = 0;
    {
      std::shared_lock guard(impl_->resize_mtx);
      MDB_txn* txn = nullptr;
      if (rc = mdb_txn_begin(impl_->env, nullptr, 0, &txn); rc != 0)
        return lmdb_error("txn_begin", rc);
      for (const auto& op : ops) {
        auto dbi = impl_->dbis[static_cast<size_t>(op.tbl)];
        MDB_val k = as_val(op.key);
        if (op.erase) {
          rc = mdb_del(txn, dbi, &k, nullptr);
          if (rc == MDB_NOTFOUND)
            rc = 0;
        } else {
          MDB_val v = as_val(op.value);
          rc = mdb_put(txn, dbi, &k, &v, 0);
        }
        if (rc != 0)
          break;
      }
      if (rc == 0)
        rc = mdb_txn_commit(txn);
      else
        mdb_txn_abort(txn);
    }
    if (rc == 0)
      return {};
    if (rc != MDB_MAP_FULL)
      return lmdb_error("write", rc);
    std::unique_lock guard(impl_->resize_mtx);
    if (impl_->map_bytes >= impl_->cfg.max_map_bytes)
      return core::error{errc::storage_failure, "LMDB map is full at store.max_map_bytes = "
                                                  + std::to_string(impl_->cfg.max_map_bytes)};
    impl_->map_bytes = std::min(impl_->map_bytes * 2, impl_->cfg.max_map_bytes);
    if (int rc2 = mdb_env_set_mapsize(impl_->env, impl_->map_bytes); rc2 != 0)
      return lmdb_error("set_mapsize", rc2);
  }
}

core::result<std::optional<std::string>> environment::get(table t, std::string_view key) const {
  std::shared_lock guard(impl_->resize_mtx);
  MDB_txn* txn = nullptr;
  if (int rc = mdb_txn_begin(impl_->env, nullptr, MDB_RDONLY, &txn); rc != 0)
    return lmdb_error("txn_begin", rc);
  MDB_val k = as_val(key), v;
  int rc = mdb_get(txn, impl_->dbis[static_cast<size_t>(t)], &k, &v);
  std::optional<std::string> out;
  if (rc == 0)
    out = std::string(as_view(v));
  mdb_txn_abort(txn);
  if (rc != 0 && rc != MDB_NOTFOUND)
    return lmdb_error("get", rc);
  return out;
}

core::error
environment::for_each(table t,
                      const std::function<bool(std::string_view, std::string_view)>& fn) const {
  std::shared_lock guard(impl_->resize_mtx);
  MDB_txn* txn = nullptr;
  if (int rc = mdb_txn_begin(impl_->env, nullptr, MDB_RDONLY, &txn); rc != 0)
    return lmdb_error("txn_begin", rc);
  MDB_cursor* cur = nullptr;
  if (int rc = mdb_cursor_open(txn, impl_->dbis[static_cast<size_t>(t)], &cur); rc != 0) {
    mdb_txn_abort(txn);
    return lmdb_error("cursor_open", rc);
  }
  MDB_val k, v;
  int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
  while (rc == 0) {
    if (!fn(as_view(k), as_view(v)))
      break;
    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
  if (rc != 0 && rc != MDB_NOTFOUND)
    return lmdb_error("cursor_get", rc);
  return {};
}

core::result<uint64_t> environment::count(table t) const {
  std::shared_lock guard(impl_->resize_mtx);
  MDB_txn* txn = nullptr;
  if (int rc = mdb_txn_begin(impl_->env, nullptr, MDB_RDONLY, &txn); rc != 0)
    return lmdb_error("txn_begin", rc);
  MDB_stat st;
  int rc = mdb_stat(txn, impl_->dbis[static_cast<size_t>(t)], &st);
  mdb_txn_abort(txn);
  if (rc != 0)
    return lmdb_error("stat", rc);
  return static_cast<uint64_t>(st.ms_entries);
}

core::error environment::ensure_schema(uint32_t embedding_dim, int64_t now_ms,
                                       const crypto::sealer* seal) {
  auto bytes = get(table::meta, "schema");
  if (!bytes)
    return bytes.err();
  if (!bytes->has_value()) {
    proto::meta_record m{proto::schema_version, embedding_dim, now_ms};
    return write({{table::meta, "schema", proto::encode(m)}});
  }
  auto m = proto::decode_meta(**bytes);
  if (!m)
    return m.err();
  if (m->schema_version > proto::schema_version)
    return core::error{errc::corrupt_data,
                       "the store in " + impl_->cfg.data_dir.string() + " has schema version "
                         + std::to_string(m->schema_version) + "; this build reads up to "
                         + std::to_string(proto::schema_version)};
  if (m->embedding_dim != embedding_dim)
    return core::error{errc::corrupt_data,
                       "the store in " + impl_->cfg.data_dir.string()
                         + " holds embeddings of dimension " + std::to_string(m->embedding_dim)
                         + " but embedder.dim is " + std::to_string(embedding_dim)};
  if (m->schema_version < proto::schema_version) {
    // Schema 1 -> 2 only appended fields (old records read as they are);
    // 2 -> 3 moves records into typed tables and Cap'n Proto. Either way
    // the new schema version is written with the rewritten records, so
    // older builds refuse the store.
    auto ops = upgrade_ops(*this, m->schema_version, seal, now_ms);
    if (!ops)
      return ops.err();
    m->schema_version = proto::schema_version;
    ops->push_back({table::meta, "schema", proto::encode(*m)});
    return write(*ops);
  }
  return {};
}

core::error environment::sync() {
  std::shared_lock guard(impl_->resize_mtx);
  if (int rc = mdb_env_sync(impl_->env, 1); rc != 0)
    return lmdb_error("sync", rc);
  return {};
}

} // namespace shoal::store
