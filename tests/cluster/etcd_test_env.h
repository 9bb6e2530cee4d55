// A private, real etcd for tests: one member on a loopback address with its
// data directory under a fresh temp directory, started detached with the
// devcluster launcher and stopped by pid.
//
// Test binaries run in parallel, so each owns its addresses: this one uses
// 127.0.0.20 (client port 23791, peer port client + 10). Other binaries use
// 127.0.0.10, .30-.39 and .50. ctest also runs the cases of one binary in
// parallel processes, so a process that finds 23791 taken (by the lock file
// /tmp/hc-etcd-test-<ip>-<port>.lock, or by a stray etcd) uses the next of
// `port_slots` client ports: 23792/23802, 23793/23803, ...
//
// Example:
//   auto env = EtcdTestEnv::Start();   // skip the test if WhyUnavailable() != ""
//   EtcdClient etcd({.endpoints = {(*env)->url()}});
//   ASSERT_TRUE((*env)->Restart().ok());
//
// Not thread-safe: one test thread drives it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/fs.h"
#include "common/status.h"

namespace hc::cluster::testing {

struct EtcdTestEnvOptions {
  std::string ip = "127.0.0.20";
  uint16_t client_port = 23791;  // the first slot; peer port = client port + 10
  int port_slots = 9;            // client ports tried: client_port .. + port_slots - 1
};

class EtcdTestEnv {
 public:
  // "" when etcd can run here, else a reason for GTEST_SKIP().
  static std::string WhyUnavailable();

  // Makes the temp dir and starts etcd in the first free port slot, waiting
  // until GET /health answers. Fails (with etcd's log) if no slot works.
  static Result<std::unique_ptr<EtcdTestEnv>> Start(const EtcdTestEnvOptions& opts = {});

  ~EtcdTestEnv();  // stops etcd, removes the temp dir
  EtcdTestEnv(const EtcdTestEnv&) = delete;
  EtcdTestEnv& operator=(const EtcdTestEnv&) = delete;

  // Starts etcd on the same data dir if it is not running; waits for /health.
  Status Resume();
  // SIGTERM by pid, waiting until it has gone. Data is kept.
  Status Stop();
  // SIGKILL by pid (a crash). Data is kept.
  Status Kill9();
  // Stop(), then Resume().
  Status Restart();

  bool running() const;
  pid_t pid() const { return pid_; }
  std::string url() const;  // "http://127.0.0.20:23791"
  const std::string& dir() const { return dir_; }
  // The last `max_bytes` of etcd's log, for failure messages.
  std::string LogTail(size_t max_bytes = 4000) const;

 private:
  EtcdTestEnv() = default;
  Status WaitHealthy(int timeout_ms);

  std::string ip_;
  uint16_t client_port_ = 0;
  uint16_t peer_port_ = 0;
  UniqueFd slot_lock_;  // flock()ed while this env owns the port slot
  std::string dir_;
  pid_t pid_ = 0;
};

}  // namespace hc::cluster::testing
