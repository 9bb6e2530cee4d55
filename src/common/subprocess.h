// Running external commands (zfs, zpool, ...) without a shell.
//
// Stderr is always captured (into an anonymous memory file, so a chatty
// child can never block on a full pipe) and returned for error messages.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "common/fs.h"
#include "common/status.h"

namespace hc {

struct CommandResult {
  int exit_code = 0;  // 128+signal if killed by a signal
  std::string out;
  std::string err;
  bool ok() const { return exit_code == 0; }
};

// Runs argv[0] (looked up in PATH) to completion, feeding `input` on stdin.
// Errors only when the command cannot be started (kUnavailable); a non-zero
// exit is reported in the result.
Result<CommandResult> RunCommand(const std::vector<std::string>& argv, std::string_view input = {});

// "zfs snapshot a@b: <first line of stderr>" for error messages.
std::string DescribeFailure(const std::vector<std::string>& argv, const CommandResult& r);

// A started child process with optional pipes to its stdin/stdout.
// Owned by one thread. The destructor kills (SIGKILL) and reaps a child that
// was not waited for.
class Subprocess {
 public:
  // pipe_bytes > 0 grows the pipes created here to that size (GrowPipe),
  // for children that stream bulk data through them.
  static Result<Subprocess> Spawn(const std::vector<std::string>& argv, bool pipe_stdin,
                                  bool pipe_stdout, size_t pipe_bytes = 0);
  Subprocess(Subprocess&& o) noexcept
      : pid_(std::exchange(o.pid_, -1)),
        in_(std::move(o.in_)),
        out_(std::move(o.out_)),
        err_(std::move(o.err_)) {}
  Subprocess& operator=(Subprocess&& o) noexcept {
    if (this != &o) {
      if (pid_ > 0) {
        Kill();
        (void)Wait();
      }
      pid_ = std::exchange(o.pid_, -1);
      in_ = std::move(o.in_);
      out_ = std::move(o.out_);
      err_ = std::move(o.err_);
    }
    return *this;
  }
  ~Subprocess();

  int stdin_fd() const { return in_.get(); }
  int stdout_fd() const { return out_.get(); }
  void CloseStdin() { in_.Reset(); }
  void CloseStdout() { out_.Reset(); }
  pid_t pid() const { return pid_; }

  // Waits for exit; returns the exit code (128+signal) and captured stderr.
  Result<CommandResult> Wait();
  void Kill();

 private:
  Subprocess() = default;
  pid_t pid_ = -1;
  UniqueFd in_, out_, err_;
};

}  // namespace hc
