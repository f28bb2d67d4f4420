// A real `shoal` process for integration tests: started with fork/exec on a
// random loopback port in a private data directory, stopped with a signal.
// Not thread-safe; one object per process.
#pragma once

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace shoal::testing {

/// A temporary directory removed with everything in it on destruction.
class temp_dir {
public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const std::filesystem::path& path() const { return path_; }

private:
  std::filesystem::path path_;
};

/// Outcome of a process that ran to completion.
struct run_result {
  int exit_code = -1; ///< exit status, or -1 if killed by a signal / timed out
  std::string output; ///< stdout and stderr interleaved
};

/// Runs `program <args>` (a path) to completion (at most `timeout`) with extra
/// environment entries ("KEY=value") and returns its exit code and output.
run_result run_program(const std::string& program, const std::vector<std::string>& args,
                       const std::vector<std::string>& env = {},
                       std::chrono::seconds timeout = std::chrono::seconds(60));

/// Runs `shoal <args>` to completion (at most `timeout`) with extra
/// environment entries ("KEY=value") and returns its exit code and output.
run_result run_shoal(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
                     std::chrono::seconds timeout = std::chrono::seconds(60));

/// A running `shoal node`. start() passes `--set http.port=0`, a port file and
/// `store.data_dir=<data_dir>`, `--config configs/demo.toml` (the demo tiers)
/// unless the caller passes a --config, plus the caller's extra arguments,
/// and waits until the node listens.
class node_process {
public:
  ~node_process();
  node_process(const node_process&) = delete;
  node_process& operator=(const node_process&) = delete;

  /// Starts a node; nullopt (with the node's log in `log`) if it exited or
  /// did not listen within 20 s.
  static std::unique_ptr<node_process> start(const std::filesystem::path& data_dir,
                                             const std::vector<std::string>& extra_args,
                                             std::string* log = nullptr);

  /// Sends `sig` and waits (at most 30 s) for the exit; returns the exit
  /// code, or -1 if the node died from a signal or had to be killed.
  int stop(int sig);

  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  /// Everything the node wrote to stdout/stderr so far.
  std::string log() const;

  /// A fresh keep-alive client for this node.
  httplib::Client client() const;

private:
  node_process() = default;
  int pid_ = -1;
  int port_ = 0;
  std::filesystem::path log_path_;
};

/// A free TCP port on 127.0.0.1 (bound and released: a small race is possible).
int free_port();

/// A real nats-server (Debian's, with JetStream) on loopback, optionally one
/// member of a cluster. Its JetStream store lives in the given directory, so
/// a restart keeps the streams.
class nats_server {
public:
  struct options {
    int port = 0;                  ///< client port; 0 picks a free one
    std::string name;              ///< server_name; "" = from the port
    std::string cluster_name;      ///< with cluster_port: the cluster's name
    int cluster_port = 0;          ///< 0 = standalone
    std::vector<int> routes;       ///< cluster ports of the other members
    std::string token;             ///< client auth token; "" = no auth
    std::string tls_cert, tls_key; ///< PEM files: require TLS from clients
  };

  ~nats_server();
  nats_server(const nats_server&) = delete;
  nats_server& operator=(const nats_server&) = delete;

  /// Starts the server and waits until it accepts connections (20 s at most);
  /// nullptr (with its log in `log`) otherwise.
  static std::unique_ptr<nats_server> start(const std::filesystem::path& dir, options o,
                                            std::string* log = nullptr);
  /// Stops it with `sig` and waits; returns the exit code or -1.
  int stop(int sig = SIGTERM);
  /// Starts it again on the same ports with the same store. @returns success.
  bool restart(std::string* log = nullptr);

  int port() const { return opts_.port; }
  std::string url() const { return "nats://127.0.0.1:" + std::to_string(opts_.port); }
  std::string log() const;

private:
  nats_server() = default;
  bool run(std::string* log);
  std::filesystem::path dir_;
  std::filesystem::path log_path_;
  options opts_;
  int pid_ = -1;
};

/// Parses a response body as JSON (discarded value if it is not JSON).
nlohmann::json body_json(const httplib::Result& r);

/// POSTs a JSON body (given as text, so malformed bodies can be sent).
httplib::Result post(httplib::Client& c, const std::string& path, const std::string& body);

} // namespace shoal::testing
