#include "cluster/etcd_test_env.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "common/fs.h"
#include "devcluster/local_cluster.h"
#include "net/http_client.h"
#include "net/socket.h"

namespace hc::cluster::testing {
namespace {

using std::chrono::milliseconds;

constexpr int kStartTimeoutMs = 20000;
constexpr int kStopTimeoutMs = 10000;

bool Healthy(const std::string& url) {
  auto hp = net::ParseHttpUrl(url, 2379);
  if (!hp.ok()) return false;
  net::HttpClientOptions o;
  o.connect_timeout = milliseconds(300);
  o.request_timeout = milliseconds(1000);
  net::HttpClient c(*hp, o);
  auto r = c.Do("GET", "/health");
  return r.ok() && r->status == 200 && r->body.find("true") != std::string::npos;
}

}  // namespace

std::string EtcdTestEnv::WhyUnavailable() {
  if (std::system("command -v etcd >/dev/null 2>&1") != 0)
    return "etcd not installed (apt-get install etcd-server)";
  return "";
}

Result<std::unique_ptr<EtcdTestEnv>> EtcdTestEnv::Start(const EtcdTestEnvOptions& opts) {
  // SpawnDetached double-forks, so etcd would become the child of pid 1. In
  // containers whose pid 1 does not reap, a stopped etcd stays a zombie and
  // StopPid waits for it forever. As subreaper we inherit etcd, and StopPid's
  // waitpid reaps it.
  (void)::prctl(PR_SET_CHILD_SUBREAPER, 1);
  std::unique_ptr<EtcdTestEnv> env(new EtcdTestEnv());
  char tmpl[] = "/tmp/hc-etcd-test-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return ErrnoStatus("mkdtemp /tmp/hc-etcd-test-XXXXXX", errno);
  env->dir_ = tmpl;
  env->ip_ = opts.ip;
  std::string tried;
  for (int k = 0; k < opts.port_slots; k++) {
    env->client_port_ = static_cast<uint16_t>(opts.client_port + k);
    env->peer_port_ = static_cast<uint16_t>(env->client_port_ + 10);
    std::string lock =
        "/tmp/hc-etcd-test-" + opts.ip + "-" + std::to_string(env->client_port_) + ".lock";
    env->slot_lock_ = UniqueFd(::open(lock.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0666));
    if (!env->slot_lock_.valid()) return ErrnoStatus("open " + lock, errno);
    if (::flock(env->slot_lock_.get(), LOCK_EX | LOCK_NB) != 0) {
      tried += "\n  " + env->url() + ": in use by another test process";
      continue;
    }
    if (Healthy(env->url())) {
      tried += "\n  " + env->url() + ": a stray etcd answers (left over from a crashed run?)";
      continue;
    }
    Status s = env->Resume();
    if (s.ok()) return env;
    tried += "\n  " + env->url() + ": " + s.message();
    (void)env->Stop();
    (void)RemoveTree(JoinPath(env->dir_, "data"));
  }
  return Unavailable("cannot start a test etcd on " + opts.ip + ":" +
                     std::to_string(opts.client_port) + "+:" + tried);
}

EtcdTestEnv::~EtcdTestEnv() {
  (void)Stop();
  if (!dir_.empty()) (void)RemoveTree(dir_);
}

std::string EtcdTestEnv::url() const {
  return "http://" + ip_ + ":" + std::to_string(client_port_);
}

bool EtcdTestEnv::running() const {
  if (pid_ <= 0) return false;
  int st;
  if (::waitpid(pid_, &st, WNOHANG) == pid_) return false;  // exited (we are its reaper)
  return ::kill(pid_, 0) == 0;
}

Status EtcdTestEnv::Resume() {
  if (running()) return Status::Ok();
  pid_ = 0;
  std::string client = url();
  std::string peer = "http://" + ip_ + ":" + std::to_string(peer_port_);
  // Short raft timers: a restarted single member elects itself in about a
  // second. The minimum lease TTL becomes 1 s; tests use 2 s and more.
  HC_ASSIGN_OR_RETURN(pid_, devcluster::SpawnDetached({"etcd",
                                                       "--name",
                                                       "test",
                                                       "--data-dir",
                                                       JoinPath(dir_, "data"),
                                                       "--listen-client-urls",
                                                       client,
                                                       "--advertise-client-urls",
                                                       client,
                                                       "--listen-peer-urls",
                                                       peer,
                                                       "--initial-advertise-peer-urls",
                                                       peer,
                                                       "--initial-cluster",
                                                       "test=" + peer,
                                                       "--heartbeat-interval",
                                                       "50",
                                                       "--election-timeout",
                                                       "500",
                                                       "--log-level",
                                                       "warn"},
                                                      JoinPath(dir_, "etcd.log")));
  return WaitHealthy(kStartTimeoutMs);
}

Status EtcdTestEnv::WaitHealthy(int timeout_ms) {
  auto until = std::chrono::steady_clock::now() + milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < until) {
    if (!running())
      return Unavailable("etcd exited at start (is " + url() + " free?); its log:\n" + LogTail());
    if (Healthy(url())) return Status::Ok();
    std::this_thread::sleep_for(milliseconds(50));
  }
  return Unavailable("etcd did not become healthy in " + std::to_string(timeout_ms / 1000) +
                     " s; its log:\n" + LogTail());
}

Status EtcdTestEnv::Stop() {
  if (pid_ <= 0) return Status::Ok();
  HC_RETURN_IF_ERROR(devcluster::StopPid(pid_, "etcd", SIGTERM, kStopTimeoutMs));
  pid_ = 0;
  return Status::Ok();
}

Status EtcdTestEnv::Kill9() {
  if (pid_ <= 0) return Status::Ok();
  HC_RETURN_IF_ERROR(devcluster::StopPid(pid_, "etcd", SIGKILL, kStopTimeoutMs));
  pid_ = 0;
  return Status::Ok();
}

Status EtcdTestEnv::Restart() {
  HC_RETURN_IF_ERROR(Stop());
  return Resume();
}

std::string EtcdTestEnv::LogTail(size_t max_bytes) const {
  auto text = ReadFileToString(JoinPath(dir_, "etcd.log"));
  if (!text.ok()) return "(no log: " + text.status().message() + ")";
  if (text->size() > max_bytes) return "..." + text->substr(text->size() - max_bytes);
  return *text;
}

}  // namespace hc::cluster::testing
