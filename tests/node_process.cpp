#include "node_process.hpp"

#include <csignal>
#include <cstdlib>
#include <fcntl.h>
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

/// fork/exec of the shoal binary with stdout+stderr sent to `log_path`.
int spawn(const std::vector<std::string>& args, const std::vector<std::string>& env,
          const fs::path& log_path) {
  std::vector<std::string> argv_s{SHOAL_BINARY};
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

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

} // namespace

run_result run_shoal(const std::vector<std::string>& args, const std::vector<std::string>& env,
                     std::chrono::seconds timeout) {
  temp_dir dir;
  auto log = dir.path() / "output.log";
  int pid = spawn(args, env, log);
  run_result out;
  out.exit_code = wait_for(pid, timeout);
  out.output = slurp(log);
  return out;
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
                                "--set", "http.port=0",
                                "--set", "http.port_file=" + port_file.string(),
                                "--set", "store.data_dir=" + data_dir.string(),
                                "--set", "node.log_level=warn"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  p->pid_ = spawn(args, {}, p->log_path_);
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
  if (pid_ <= 0)
    return -1;
  kill(pid_, sig);
  int rc = wait_for(pid_, 30s);
  pid_ = -1;
  return rc;
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
