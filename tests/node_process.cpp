#include "node_process.hpp"

#include <algorithm>

#include <csignal>
#include <cstdlib>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char** environ;

namespace shoal::testing {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

temp_dir::temp_dir() {
  std::string tmpl = (fs::temp_directory_path() / "shoal-test-XXXXXX").string();
  if (!mkdtemp(tmpl.data()))
    throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

temp_dir::~temp_dir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

namespace {

/// fork/exec of `program` with stdout+stderr sent to `log_path`.
int spawn(const std::string& program, const std::vector<std::string>& args,
          const std::vector<std::string>& env, const fs::path& log_path) {
  std::vector<std::string> argv_s{program};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s;
  for (char** e = environ; *e; ++e)
    if (std::string_view(*e).rfind("SHOAL_", 0) != 0) // tests control SHOAL_* fully
      env_s.emplace_back(*e);
  env_s.insert(env_s.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (auto& e : env_s)
    envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0)
    throw std::runtime_error("fork failed");
  if (pid == 0) {
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  return pid;
}

/// Waits for `pid` at most `timeout`; kills it after that. Returns the exit
/// code or -1.
int wait_for(int pid, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid)
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(5ms);
  }
}

/// Sends `sig` to `pid` and waits (30 s at most, then SIGKILL); clears `pid`.
int stop_process(int& pid, int sig) {
  if (pid <= 0)
    return -1;
  kill(pid, sig);
  int rc = wait_for(pid, 30s);
  pid = -1;
  return rc;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

} // namespace

run_result run_program(const std::string& program, const std::vector<std::string>& args,
                       const std::vector<std::string>& env, std::chrono::seconds timeout) {
  temp_dir dir;
  auto log = dir.path() / "output.log";
  int pid = spawn(program, args, env, log);
  run_result out;
  out.exit_code = wait_for(pid, timeout);
  out.output = slurp(log);
  return out;
}

run_result run_shoal(const std::vector<std::string>& args, const std::vector<std::string>& env,
                     std::chrono::seconds timeout) {
  return run_program(SHOAL_BINARY, args, env, timeout);
}

std::unique_ptr<node_process> node_process::start(const fs::path& data_dir,
                                                  const std::vector<std::string>& extra_args,
                                                  std::string* log) {
  fs::create_directories(data_dir);
  auto port_file = data_dir / "port";
  fs::remove(port_file);
  std::unique_ptr<node_process> p(new node_process);
  p->log_path_ = data_dir / "node.log";
  std::vector<std::string> args{"node",
                                "--set",
                                "http.port=0",
                                "--set",
                                "http.port_file=" + port_file.string(),
                                "--set",
                                "store.data_dir=" + data_dir.string(),
                                "--set",
                                "node.log_level=warn"};
  // The random-weight demo tiers unless the caller brings a config.
  if (std::find(extra_args.begin(), extra_args.end(), "--config") == extra_args.end()) {
    args.push_back("--config");
    args.push_back(SHOAL_SOURCE_DIR "/configs/demo.toml");
  }
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  p->pid_ = spawn(SHOAL_BINARY, args, {}, p->log_path_);
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(p->pid_, &status, WNOHANG) == p->pid_) {
      p->pid_ = -1;
      if (log)
        *log = p->log();
      return nullptr;
    }
    std::ifstream in(port_file);
    std::string where;
    if (in >> where) {
      p->port_ = std::stoi(where.substr(where.rfind(':') + 1));
      return p;
    }
    std::this_thread::sleep_for(10ms);
  }
  if (log)
    *log = p->log();
  p->stop(SIGKILL);
  return nullptr;
}

node_process::~node_process() {
  if (pid_ > 0)
    stop(SIGKILL);
}

int node_process::stop(int sig) {
  return stop_process(pid_, sig);
}

std::string node_process::log() const {
  return slurp(log_path_);
}

httplib::Client node_process::client() const {
  httplib::Client c("127.0.0.1", port_);
  c.set_keep_alive(true);
  c.set_tcp_nodelay(true); // headers and body are separate writes: avoid delayed-ACK stalls
  c.set_read_timeout(30, 0);
  return c;
}

nlohmann::json body_json(const httplib::Result& r) {
  if (!r)
    return nlohmann::json(nlohmann::json::value_t::discarded);
  return nlohmann::json::parse(r->body, nullptr, false);
}

httplib::Result post(httplib::Client& c, const std::string& path, const std::string& body) {
  return c.Post(path, body, "application/json");
}

} // namespace shoal::testing

namespace shoal::testing {

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0
      || getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    throw std::runtime_error("cannot find a free port");
  close(fd);
  return ntohs(a.sin_port);
}

namespace {

bool accepts(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  if (fd >= 0)
    close(fd);
  return ok;
}

} // namespace

std::unique_ptr<nats_server> nats_server::start(const fs::path& dir, options o, std::string* log) {
  fs::create_directories(dir);
  std::unique_ptr<nats_server> s(new nats_server);
  s->dir_ = dir;
  s->opts_ = std::move(o);
  if (s->opts_.port == 0)
    s->opts_.port = free_port();
  if (!s->run(log))
    return nullptr;
  return s;
}

bool nats_server::run(std::string* log) {
  auto conf = dir_ / "nats.conf";
  {
    std::ofstream out(conf);
    out << "server_name: " << (opts_.name.empty() ? "n" + std::to_string(opts_.port) : opts_.name)
        << "\nlisten: 127.0.0.1:" << opts_.port << "\n";
    // Small JetStream limits: the default reserves most of the machine.
    out << "jetstream { store_dir: \"" << (dir_ / "js").string()
        << "\", max_memory_store: 64MB, max_file_store: 512MB }\n";
    if (!opts_.tls_cert.empty())
      out << "tls { cert_file: \"" << opts_.tls_cert << "\", key_file: \"" << opts_.tls_key
          << "\" }\n";
    if (!opts_.token.empty())
      out << "authorization { token: \"" << opts_.token << "\" }\n";
    if (opts_.cluster_port != 0) {
      out << "cluster { name: \"" << opts_.cluster_name
          << "\", listen: 127.0.0.1:" << opts_.cluster_port << ", routes: [";
      for (size_t i = 0; i < opts_.routes.size(); ++i)
        out << (i ? ", " : "") << "nats-route://127.0.0.1:" << opts_.routes[i];
      out << "] }\n";
    }
  }
  log_path_ = dir_ / "nats.log";
  pid_ = spawn(SHOAL_NATS_SERVER, {"-c", conf.string()}, {}, log_path_);
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      break;
    }
    if (accepts(opts_.port))
      return true;
    std::this_thread::sleep_for(10ms);
  }
  if (log)
    *log = slurp(log_path_);
  stop(SIGKILL);
  return false;
}

bool nats_server::restart(std::string* log) {
  stop(SIGTERM);
  return run(log);
}

nats_server::~nats_server() {
  if (pid_ > 0)
    stop(SIGKILL);
}

int nats_server::stop(int sig) {
  return stop_process(pid_, sig);
}

std::string nats_server::log() const {
  return slurp(log_path_);
}

} // namespace shoal::testing
