// ApplyTemplate and SeedVolume without a runtime: the specs they produce, the
// shell scripts' syntax and first-run guards, and what a fresh volume gets.
// tests/runtime/database_test.cc runs the templates for real.
#include "runtime/templates.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "common/fs.h"
#include "common/subprocess.h"
#include "test_util.h"

namespace hc::runtime {
namespace {

using testing::TempDir;

TemplateRequest Request(const std::string& template_name, const std::string& volume = "/srv/v") {
  TemplateRequest req;
  req.template_name = template_name;
  req.app_name = "shop";
  req.volume_path = volume;
  req.port = 8123;
  return req;
}

// The template's program, or a skip when this machine lacks its package.
#define APPLY_OR_SKIP(var, req)                                       \
  auto var##_result = ApplyTemplate(req);                             \
  if (var##_result.status().code() == Code::kNotFound) {              \
    GTEST_SKIP() << "skipped: " << var##_result.status().message();   \
  }                                                                   \
  ASSERT_TRUE(var##_result.ok()) << var##_result.status().ToString(); \
  AppSpec var = *var##_result

std::string Script(const AppSpec& spec) {
  EXPECT_EQ(spec.argv.size(), 3u);
  if (spec.argv.size() != 3) return "";
  EXPECT_EQ(spec.argv[0], "/bin/sh");
  EXPECT_EQ(spec.argv[1], "-c");
  return spec.argv[2];
}

// Runs a template's script as this user with the runtime's environment and
// nothing else.
CommandResult RunScript(const AppSpec& spec, const std::string& app_dir, uint16_t port) {
  std::vector<std::string> argv = {
      "env",
      "-i",
      "PORT=" + std::to_string(port),
      "APP_DIR=" + app_dir,
      "HOME=" + app_dir,
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"};
  argv.insert(argv.end(), spec.argv.begin(), spec.argv.end());
  auto r = RunCommand(argv);
  HC_CHECK(r.ok(), r.status().ToString());
  return *r;
}

TEST(TemplateNames, AreTheFourTemplates) {
  EXPECT_EQ(TemplateNames(),
            (std::vector<std::string>{"static", "command", "postgres", "mariadb"}));
}

TEST(ApplyTemplate, UnknownTemplateIsInvalidAndListsTheKnownOnes) {
  auto r = ApplyTemplate(Request("wordpress"));
  ASSERT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find("'wordpress'"), std::string::npos);
  EXPECT_NE(r.status().message().find("static, command, postgres, mariadb"), std::string::npos);
}

TEST(ApplyTemplate, CommandRunsTheLineThroughShAndCopiesTheRequest) {
  TemplateRequest req = Request("command");
  req.command = "exec ./server --port \"$PORT\"";
  req.env = {"MODE=production"};
  req.limits.memory_bytes = 64ull << 20;
  req.limits.cpu_millis = 250;
  req.limits.pids = 32;
  auto r = ApplyTemplate(req);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->argv, (std::vector<std::string>{"/bin/sh", "-c", req.command}));
  EXPECT_EQ(r->template_name, "command");
  EXPECT_EQ(r->name, "shop");
  EXPECT_EQ(r->port, 8123);
  EXPECT_EQ(r->volume_path, "/srv/v");
  EXPECT_EQ(r->env, req.env);
  EXPECT_EQ(r->limits.memory_bytes, 64ull << 20);
  EXPECT_EQ(r->limits.cpu_millis, 250u);
  EXPECT_EQ(r->limits.pids, 32u);
  EXPECT_EQ(r->probe.kind, ProbeKind::kTcp);
}

TEST(ApplyTemplate, CommandWithoutACommandLineIsInvalid) {
  for (const char* line : {"", "  \t\n"}) {
    TemplateRequest req = Request("command");
    req.command = line;
    EXPECT_EQ(ApplyTemplate(req).status().code(), Code::kInvalidArgument) << "'" << line << "'";
  }
}

TEST(ApplyTemplate, ACommandLineForAnotherTemplateIsInvalid) {
  TemplateRequest req = Request("static");
  req.command = "exec ./server";
  auto r = ApplyTemplate(req);
  ASSERT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find("only for template command"), std::string::npos);
}

TEST(ApplyTemplate, StaticServesPublicWithBusyboxOnLoopbackAndProbesHttp) {
  APPLY_OR_SKIP(spec, Request("static"));
  std::string script = Script(spec);
  EXPECT_NE(script.find("exec /usr/bin/busybox httpd -f"), std::string::npos) << script;
  EXPECT_NE(script.find("-p \"127.0.0.1:$PORT\""), std::string::npos) << script;
  EXPECT_NE(script.find("-h \"$APP_DIR/public\""), std::string::npos) << script;
  EXPECT_EQ(spec.probe.kind, ProbeKind::kHttp);
  EXPECT_EQ(spec.probe.http_path, "/");
  EXPECT_EQ(spec.template_name, "static");
}

TEST(ApplyTemplate, PostgresRunsTheInstalledServerAndStopsFast) {
  APPLY_OR_SKIP(spec, Request("postgres"));
  std::string script = Script(spec);
  EXPECT_NE(script.find("/usr/lib/postgresql/"), std::string::npos) << script;
  EXPECT_NE(script.find("exec \"$bin/postgres\" -D \"$data\" -p \"$PORT\""), std::string::npos);
  EXPECT_NE(script.find("listen_addresses=127.0.0.1"), std::string::npos);
  EXPECT_NE(script.find("--auth-local=scram-sha-256 --auth-host=scram-sha-256"), std::string::npos);
  EXPECT_EQ(script.find("trust"), std::string::npos) << "no connection may skip the password";
  EXPECT_EQ(spec.probe.kind, ProbeKind::kTcp);
  EXPECT_EQ(spec.stop_signal, SIGINT);  // fast shutdown, not "wait for every client"
}

TEST(ApplyTemplate, MariadbReadsNoHostConfigAndBindsOnlyItsPort) {
  APPLY_OR_SKIP(spec, Request("mariadb"));
  std::string script = Script(spec);
  EXPECT_NE(script.find("exec /usr/sbin/mariadbd"), std::string::npos) << script;
  EXPECT_NE(script.find("--no-defaults"), std::string::npos);
  EXPECT_NE(script.find("--port=\"$PORT\" --bind-address=127.0.0.1"), std::string::npos);
  EXPECT_NE(script.find("--socket=\"/tmp/mariadb-$PORT.sock\""), std::string::npos);
  EXPECT_EQ(spec.probe.kind, ProbeKind::kTcp);
  EXPECT_EQ(spec.stop_signal, SIGTERM);
}

TEST(ApplyTemplate, DatabaseCachesFollowTheMemoryLimit) {
  struct Case {
    uint64_t memory;
    std::string pg, maria;
  };
  for (const Case& c :
       {Case{256ull << 20, "shared_buffers = 64MB", "innodb_buffer_pool_size = 64M"},
        Case{0, "shared_buffers = 128MB", "innodb_buffer_pool_size = 128M"},
        Case{8ull << 30, "shared_buffers = 128MB", "innodb_buffer_pool_size = 128M"},
        Case{16ull << 20, "shared_buffers = 8MB", "innodb_buffer_pool_size = 8M"}}) {
    TemplateRequest req = Request("postgres");
    req.limits.memory_bytes = c.memory;
    if (auto pg = ApplyTemplate(req); pg.ok()) {
      EXPECT_NE(pg->argv[2].find(c.pg), std::string::npos) << c.memory;
    }
    req.template_name = "mariadb";
    if (auto maria = ApplyTemplate(req); maria.ok()) {
      EXPECT_NE(maria->argv[2].find(c.maria), std::string::npos) << c.memory;
    }
  }
}

TEST(ApplyTemplate, EveryScriptIsValidShell) {
  for (const std::string& name : TemplateNames()) {
    TemplateRequest req = Request(name);
    if (name == "command") req.command = "exec sleep 1";
    auto spec = ApplyTemplate(req);
    if (spec.status().code() == Code::kNotFound) continue;
    ASSERT_TRUE(spec.ok()) << spec.status().ToString();
    auto r = RunCommand({"/bin/sh", "-n", "-c", spec->argv[2]});
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->ok()) << name << ": " << r->err;
  }
}

// A data directory that holds something but no database is never initialised
// over: the hoster may have put a dump or another version's files there.
TEST(FirstRun, PostgresRefusesANonEmptyDataDirectoryWithoutADatabase) {
  TempDir dir;
  APPLY_OR_SKIP(spec, Request("postgres", dir.path()));
  ASSERT_TRUE(MakeDirs(dir.path() + "/pgdata").ok());
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/pgdata/dump.sql", "keep me", false).ok());
  CommandResult r = RunScript(spec, dir.path(), 1);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not initialising over it"), std::string::npos) << r.err;
  EXPECT_EQ(*ReadFileToString(dir.path() + "/pgdata/dump.sql"), "keep me");
  EXPECT_FALSE(PathExists(dir.path() + "/.hc/postgres-password"));
}

TEST(FirstRun, MariadbRefusesANonEmptyDataDirectoryWithoutADatabase) {
  TempDir dir;
  APPLY_OR_SKIP(spec, Request("mariadb", dir.path()));
  ASSERT_TRUE(MakeDirs(dir.path() + "/mysql").ok());
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/mysql/ibdata1", "keep me", false).ok());
  CommandResult r = RunScript(spec, dir.path(), 1);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not initialising over it"), std::string::npos) << r.err;
  EXPECT_EQ(*ReadFileToString(dir.path() + "/mysql/ibdata1"), "keep me");
}

// Data made by a PostgreSQL this machine does not have is reported with the
// package to install, not handed to the wrong server.
TEST(FirstRun, PostgresNamesTheMissingVersionForOlderData) {
  TempDir dir;
  APPLY_OR_SKIP(spec, Request("postgres", dir.path()));
  ASSERT_TRUE(MakeDirs(dir.path() + "/pgdata").ok());
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/pgdata/PG_VERSION", "7\n", false).ok());
  CommandResult r = RunScript(spec, dir.path(), 1);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("install the Debian package postgresql-7"), std::string::npos) << r.err;
}

TEST(SeedVolume, StaticWritesAWelcomePageNamingTheApp) {
  TempDir dir;
  ASSERT_TRUE(SeedVolume("static", dir.path(), "shop").ok());
  auto page = ReadFileToString(dir.path() + "/public/index.html");
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  EXPECT_NE(page->find("<title>shop</title>"), std::string::npos) << *page;
  EXPECT_NE(page->find("Welcome to shop"), std::string::npos);
  EXPECT_NE(page->find("public/index.html"), std::string::npos);
  struct stat st;
  ASSERT_EQ(::stat((dir.path() + "/public/index.html").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
}

TEST(SeedVolume, EscapesTheAppNameInHtml) {
  TempDir dir;
  ASSERT_TRUE(SeedVolume("static", dir.path(), "a<b>&\"c'").ok());
  std::string page = *ReadFileToString(dir.path() + "/public/index.html");
  EXPECT_NE(page.find("a&lt;b&gt;&amp;&quot;c&#39;"), std::string::npos) << page;
  EXPECT_EQ(page.find("a<b>"), std::string::npos);
}

TEST(SeedVolume, LeavesAnExistingPublicFolderAlone) {
  TempDir dir;
  ASSERT_TRUE(MakeDirs(dir.path() + "/public").ok());
  ASSERT_TRUE(SeedVolume("static", dir.path(), "shop").ok());
  EXPECT_FALSE(PathExists(dir.path() + "/public/index.html"));

  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/public/index.html", "mine", false).ok());
  ASSERT_TRUE(SeedVolume("static", dir.path(), "shop").ok());
  EXPECT_EQ(*ReadFileToString(dir.path() + "/public/index.html"), "mine");
}

// public/ may be a symlink the app made; seeding never writes through it.
TEST(SeedVolume, DoesNotFollowASymlinkedPublicFolder) {
  TempDir dir, elsewhere;
  ASSERT_EQ(::symlink(elsewhere.path().c_str(), (dir.path() + "/public").c_str()), 0);
  ASSERT_TRUE(SeedVolume("static", dir.path(), "shop").ok());
  EXPECT_FALSE(PathExists(elsewhere.path() + "/index.html"));
}

TEST(SeedVolume, SeededFilesBelongToTheVolumeOwner) {
  if (::geteuid() != 0) GTEST_SKIP() << "skipped: needs root to give the volume to another uid";
  TempDir dir;
  ASSERT_EQ(::chown(dir.path().c_str(), 200123, 200124), 0);
  ASSERT_TRUE(SeedVolume("static", dir.path(), "shop").ok());
  for (const char* path : {"/public", "/public/index.html"}) {
    struct stat st;
    ASSERT_EQ(::stat((dir.path() + path).c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 200123u) << path;
    EXPECT_EQ(st.st_gid, 200124u) << path;
  }
}

TEST(SeedVolume, DatabasesAndCommandsGetNothing) {
  TempDir dir;
  for (const char* name : {"command", "postgres", "mariadb"}) {
    ASSERT_TRUE(SeedVolume(name, dir.path(), "shop").ok()) << name;
  }
  auto r = RunCommand({"find", dir.path(), "-mindepth", "1"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->out, "");
}

TEST(SeedVolume, MissingVolumeIsNotFoundAndUnknownTemplateIsInvalid) {
  EXPECT_EQ(SeedVolume("static", "/nonexistent/hc-volume", "shop").code(), Code::kNotFound);
  EXPECT_EQ(SeedVolume("postgres", "/nonexistent/hc-volume", "shop").code(), Code::kNotFound);
  TempDir dir;
  EXPECT_EQ(SeedVolume("wordpress", dir.path(), "shop").code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace hc::runtime
