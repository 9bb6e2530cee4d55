#include "common/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "common/io.h"

extern char** environ;

namespace hc {

Result<Subprocess> Subprocess::Spawn(const std::vector<std::string>& argv, bool pipe_stdin,
                                     bool pipe_stdout, size_t pipe_bytes) {
  HC_CHECK(!argv.empty(), "Spawn with empty argv");
  Subprocess p;
  int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1};
  int err_fd = ::memfd_create("hc-stderr", MFD_CLOEXEC);
  if (err_fd < 0) return ErrnoStatus("memfd_create", errno);
  p.err_ = UniqueFd(err_fd);
  if (pipe_stdin && ::pipe2(in_pipe, O_CLOEXEC) != 0) return ErrnoStatus("pipe", errno);
  UniqueFd in_r(in_pipe[0]), in_w(in_pipe[1]);
  if (pipe_stdout && ::pipe2(out_pipe, O_CLOEXEC) != 0) return ErrnoStatus("pipe", errno);
  UniqueFd out_r(out_pipe[0]), out_w(out_pipe[1]);
  if (pipe_bytes > 0) {
    if (pipe_stdin) (void)GrowPipe(in_w.get(), pipe_bytes);
    if (pipe_stdout) (void)GrowPipe(out_r.get(), pipe_bytes);
  }

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (pipe_stdin) {
    posix_spawn_file_actions_adddup2(&fa, in_r.get(), 0);
  } else {
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  }
  if (pipe_stdout) {
    posix_spawn_file_actions_adddup2(&fa, out_w.get(), 1);
  } else {
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  }
  posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  int rc = ::posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    return Unavailable("cannot run '" + argv[0] + "': " + std::strerror(rc));
  }
  p.pid_ = pid;
  p.in_ = std::move(in_w);
  p.out_ = std::move(out_r);
  return p;
}

Subprocess::~Subprocess() {
  if (pid_ > 0) {
    Kill();
    (void)Wait();
  }
}

void Subprocess::Kill() {
  if (pid_ > 0) ::kill(pid_, SIGKILL);
}

Result<CommandResult> Subprocess::Wait() {
  HC_CHECK(pid_ > 0, "Wait on a process that is not running");
  in_.Reset();
  out_.Reset();
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0) {
    if (errno != EINTR) return ErrnoStatus("waitpid", errno);
  }
  pid_ = -1;
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  off_t len = ::lseek(err_.get(), 0, SEEK_END);
  if (len > 0) {
    r.err.resize(static_cast<size_t>(len));
    ssize_t n = ::pread(err_.get(), r.err.data(), r.err.size(), 0);
    r.err.resize(n > 0 ? static_cast<size_t>(n) : 0);
  }
  return r;
}

Result<CommandResult> RunCommand(const std::vector<std::string>& argv, std::string_view input) {
  HC_ASSIGN_OR_RETURN(Subprocess p, Subprocess::Spawn(argv, !input.empty(), true));
  std::thread writer;
  if (!input.empty()) {
    int fd = p.stdin_fd();
    writer = std::thread([fd, input] {
      // Ignore SIGPIPE-style failures: the exit code tells the story.
      size_t off = 0;
      while (off < input.size()) {
        ssize_t n = ::write(fd, input.data() + off, input.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
    });
  }
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(p.stdout_fd(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  if (writer.joinable()) writer.join();
  HC_ASSIGN_OR_RETURN(CommandResult r, p.Wait());
  r.out = std::move(out);
  return r;
}

std::string DescribeFailure(const std::vector<std::string>& argv, const CommandResult& r) {
  std::string cmd;
  for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
  std::string msg = r.err;
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  if (msg.empty()) msg = "exit code " + std::to_string(r.exit_code);
  return "'" + cmd + "' failed: " + msg;
}

}  // namespace hc
