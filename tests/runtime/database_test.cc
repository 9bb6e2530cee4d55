// Real PostgreSQL, MariaDB and busybox httpd started from their templates
// through the Runtime interface, on every backend this machine can run: the
// data written through a real client survives a stop and a start, the server
// runs as the app's own uid (as root), and a stop reaches the server itself
// (a clean shutdown in its log, not a kill).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/fs.h"
#include "common/subprocess.h"
#include "runtime/templates.h"
#include "runtime_test_env.h"

namespace hc::runtime::testing {
namespace {

using namespace std::chrono_literals;

// The first start includes initdb / mariadb-install-db.
constexpr int kReadyMs = 60000;

std::string Tail(const std::string& text, size_t bytes = 3000) {
  return text.size() <= bytes ? text : "..." + text.substr(text.size() - bytes);
}

// A query through the real command-line client, retried while the server is
// listening but not yet accepting sessions (a TCP probe is satisfied as soon
// as the port is bound; PostgreSQL then still runs its startup process).
CommandResult Query(const std::vector<std::string>& argv) {
  auto deadline = std::chrono::steady_clock::now() + 15s;
  for (;;) {
    auto r = RunCommand(argv);
    HC_CHECK(r.ok(), "running " + argv[0] + ": " + r.status().ToString());
    bool starting = r->err.find("starting up") != std::string::npos ||
                    r->err.find("Connection refused") != std::string::npos;
    if (r->ok() || !starting || std::chrono::steady_clock::now() > deadline) return *r;
    std::this_thread::sleep_for(50ms);
  }
}

CommandResult Psql(uint16_t port, const std::string& password, const std::string& sql) {
  return Query({"env",
                "PGPASSWORD=" + password,
                "PGCONNECT_TIMEOUT=5",
                "psql",
                "-X",
                "-w",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                std::to_string(port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql});
}

CommandResult Mariadb(uint16_t port, const std::string& password, const std::string& sql) {
  return Query({"env", "MYSQL_PWD=" + password, "mariadb", "--no-defaults", "--protocol=TCP",
                "--connect-timeout=5", "-h", "127.0.0.1", "-P", std::to_string(port), "-u", "root",
                "-N", "-B", "-e", sql});
}

// One GET over a raw socket; the whole response.
std::string HttpGet(uint16_t port, const std::string& path) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{.tv_sec = 5, .tv_usec = 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return "connect: " + std::string(std::strerror(errno));
  }
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  if (::send(fd.get(), req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    return "send failed";
  }
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd.get(), buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

// The real uid of a host process, from /proc.
uint32_t ProcessUid(pid_t pid) {
  auto status = ReadFileToString("/proc/" + std::to_string(pid) + "/status");
  if (!status.ok()) return UINT32_MAX;
  size_t at = status->find("\nUid:");
  return at == std::string::npos ? UINT32_MAX : std::stoul(status->substr(at + 5));
}

uint32_t OwnerOf(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? st.st_uid : UINT32_MAX;
}

class DatabaseTest : public BackendTest {
 protected:
  void TearDown() override {
    for (const std::string& name : started_) {
      Status s = rt_->Stop(name);
      EXPECT_TRUE(s.ok()) << s.ToString();
    }
    env_.reset();
  }

  // The template's spec for a fresh volume; "" in missing_ when the
  // template's package is not installed.
  AppSpec Make(const std::string& template_name, const std::string& name) {
    TemplateRequest req;
    req.template_name = template_name;
    req.app_name = name;
    req.volume_path = env_->MakeVolume(name);
    req.port = FreePort();
    auto spec = ApplyTemplate(req);
    if (spec.status().code() == Code::kNotFound) {
      missing_ = spec.status().message();
      return {};
    }
    EXPECT_TRUE(spec.ok()) << spec.status().ToString();
    EXPECT_TRUE(SeedVolume(template_name, req.volume_path, name).ok());
    return spec.ok() ? *spec : AppSpec{};
  }

  std::string Log(const std::string& name) {
    auto log = ReadFileToString(rt_->LogPath(name));
    return log.ok() ? *log : "(no log: " + log.status().ToString() + ")";
  }

  // Starts the app and waits for its probe; false (with the log) on failure.
  bool StartReady(const AppSpec& spec) {
    Status s = rt_->Start(spec);
    EXPECT_TRUE(s.ok()) << s.ToString();
    if (!s.ok()) return false;
    if (std::find(started_.begin(), started_.end(), spec.name) == started_.end()) {
      started_.push_back(spec.name);
    }
    s = rt_->WaitReady(spec.name, kReadyMs);
    EXPECT_TRUE(s.ok()) << s.ToString() << "\nlog:\n" << Tail(Log(spec.name));
    return s.ok();
  }

  // Stops the app and checks that the stop signal ended it, well before the
  // runtime's SIGKILL at stop_timeout_ms.
  void StopApp(const std::string& name, int stop_timeout_ms) {
    auto began = std::chrono::steady_clock::now();
    Status s = rt_->Stop(name);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_LT(std::chrono::steady_clock::now() - began,
              std::chrono::milliseconds(stop_timeout_ms / 2))
        << "the stop signal did not end '" << name << "'";
    auto st = rt_->GetStatus(name);
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    EXPECT_EQ(st->state, AppState::kStopped) << AppStateName(st->state);
  }

  // As root the runtime runs apps as their own uid: the server and what it
  // wrote into the volume belong to it.
  void ExpectRunsAsAppUser(const AppSpec& spec, const std::string& data_dir) {
    if (::geteuid() != 0) return;
    auto st = rt_->GetStatus(spec.name);
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    ASSERT_GT(st->pid, 0);
    EXPECT_EQ(ProcessUid(st->pid), AppUid(spec.name));
    EXPECT_EQ(OwnerOf(JoinPath(spec.volume_path, data_dir)), AppUid(spec.name));
  }

  std::string Secret(const AppSpec& spec, const std::string& file) {
    auto pw = ReadFileToString(JoinPath(spec.volume_path, ".hc/" + file));
    EXPECT_TRUE(pw.ok()) << pw.status().ToString();
    if (!pw.ok()) return "";
    EXPECT_GE(pw->size(), 32u) << "a generated password";
    struct stat st;
    EXPECT_EQ(::stat(JoinPath(spec.volume_path, ".hc/" + file).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << file << " must be readable by the app only";
    return *pw;
  }

  std::vector<std::string> started_;
  std::string missing_;
};

#define SKIP_IF_MISSING()                                           \
  do {                                                              \
    if (!missing_.empty()) GTEST_SKIP() << "skipped: " << missing_; \
  } while (0)

TEST_P(DatabaseTest, PostgresKeepsRowsAcrossStopAndStart) {
  AppSpec spec = Make("postgres", "pg");
  SKIP_IF_MISSING();
  ASSERT_TRUE(StartReady(spec));
  ExpectRunsAsAppUser(spec, "pgdata");
  std::string pw = Secret(spec, "postgres-password");

  CommandResult r = Psql(spec.port, pw,
                         "CREATE TABLE guestbook (id int PRIMARY KEY, note text);"
                         "INSERT INTO guestbook VALUES (1, 'kept across restarts é');");
  ASSERT_TRUE(r.ok()) << r.err << "\nlog:\n" << Tail(Log("pg"));
  CommandResult wrong = Psql(spec.port, "not-the-password", "SELECT 1");
  EXPECT_FALSE(wrong.ok());
  EXPECT_NE(wrong.err.find("password authentication failed"), std::string::npos) << wrong.err;

  StopApp("pg", spec.stop_timeout_ms);
  EXPECT_NE(Log("pg").find("database system is shut down"), std::string::npos)
      << "SIGINT should reach postgres itself:\n"
      << Tail(Log("pg"));

  ASSERT_TRUE(StartReady(spec));
  r = Psql(spec.port, pw, "SELECT note FROM guestbook WHERE id = 1");
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_EQ(r.out, "kept across restarts é\n");
  r = Psql(spec.port, pw, "SHOW server_encoding");
  EXPECT_EQ(r.out, "UTF8\n") << r.err;
  StopApp("pg", spec.stop_timeout_ms);
}

TEST_P(DatabaseTest, MariadbKeepsRowsAcrossStopAndStart) {
  AppSpec spec = Make("mariadb", "maria");
  SKIP_IF_MISSING();
  ASSERT_TRUE(StartReady(spec));
  ExpectRunsAsAppUser(spec, "mysql");
  std::string pw = Secret(spec, "mariadb-root-password");

  CommandResult r = Mariadb(spec.port, pw,
                            "CREATE DATABASE shop;"
                            "CREATE TABLE shop.guestbook (id INT PRIMARY KEY, note TEXT);"
                            "INSERT INTO shop.guestbook VALUES (1, 'kept across restarts é');");
  ASSERT_TRUE(r.ok()) << r.err << "\nlog:\n" << Tail(Log("maria"));
  CommandResult wrong = Mariadb(spec.port, "not-the-password", "SELECT 1");
  EXPECT_FALSE(wrong.ok());
  EXPECT_NE(wrong.err.find("Access denied"), std::string::npos) << wrong.err;

  StopApp("maria", spec.stop_timeout_ms);
  EXPECT_NE(Log("maria").find("Shutdown complete"), std::string::npos)
      << "SIGTERM should reach mariadbd itself:\n"
      << Tail(Log("maria"));

  ASSERT_TRUE(StartReady(spec));
  r = Mariadb(spec.port, pw, "SELECT note FROM shop.guestbook WHERE id = 1");
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_EQ(r.out, "kept across restarts é\n");
  r = Mariadb(spec.port, pw, "SELECT @@character_set_server");
  EXPECT_EQ(r.out, "utf8mb4\n") << r.err;
  StopApp("maria", spec.stop_timeout_ms);
}

TEST_P(DatabaseTest, StaticServesTheSeededWelcomePage) {
  AppSpec spec = Make("static", "site");
  SKIP_IF_MISSING();
  ASSERT_TRUE(StartReady(spec));

  std::string page = HttpGet(spec.port, "/");
  EXPECT_EQ(page.rfind("HTTP/1.", 0), 0u) << page;
  EXPECT_NE(page.find(" 200 "), std::string::npos) << page;
  EXPECT_NE(page.find("Welcome to site"), std::string::npos) << page;
  std::string missing = HttpGet(spec.port, "/no-such-page.html");
  EXPECT_NE(missing.find(" 404 "), std::string::npos) << missing;

  ASSERT_TRUE(
      WriteFileAtomic(JoinPath(spec.volume_path, "public/hello.txt"), "hello\n", false).ok());
  std::string hello = HttpGet(spec.port, "/hello.txt");
  EXPECT_NE(hello.find("\r\n\r\nhello\n"), std::string::npos) << hello;
  StopApp("site", spec.stop_timeout_ms);
}

INSTANTIATE_TEST_SUITE_P(Backends, DatabaseTest, ::testing::ValuesIn(BackendsToTest()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace hc::runtime::testing
