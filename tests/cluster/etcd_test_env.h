// A private, real etcd for tests: one member on a loopback address with its
// data directory under a fresh temp directory, started detached with the
// devcluster launcher and stopped by pid.
//
// Test binaries run in parallel, so each owns its addresses: this one uses
// 127.0.0.20 (client port 23791, peer port +10 by default). Other binaries
// use 127.0.0.10, .30-.39 and .50.
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

#include "common/status.h"

namespace hc::cluster::testing {

struct EtcdTestEnvOptions {
  std::string ip = "127.0.0.20";
  uint16_t client_port = 23791;
  uint16_t peer_port = 0;  // 0 = client_port + 10
};

class EtcdTestEnv {
 public:
  // "" when etcd can run here, else a reason for GTEST_SKIP().
  static std::string WhyUnavailable();

  // Makes the temp dir and starts etcd, waiting until GET /health answers.
  // Fails (with etcd's log) if the address is already in use or etcd exits.
  static Result<std::unique_ptr<EtcdTestEnv>> Start(EtcdTestEnvOptions opts = {});

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
  explicit EtcdTestEnv(EtcdTestEnvOptions opts) : opts_(std::move(opts)) {}
  Status WaitHealthy(int timeout_ms);

  EtcdTestEnvOptions opts_;
  std::string dir_;
  pid_t pid_ = 0;
};

}  // namespace hc::cluster::testing
