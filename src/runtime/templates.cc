#include "runtime/templates.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <initializer_list>
#include <string_view>
#include <utility>
#include <vector>

#include "common/fs.h"

namespace hc::runtime {
namespace {

// Binaries are resolved on the host when the spec is made. Inside a runc
// container /usr is the host's /usr (read-only), so the same paths work there.
constexpr char kBusybox[] = "/usr/bin/busybox";
constexpr char kPostgresRoot[] = "/usr/lib/postgresql";
constexpr char kMariadbd[] = "/usr/sbin/mariadbd";
constexpr char kMariadbInstallDb[] = "/usr/bin/mariadb-install-db";
// initdb refuses to run as a uid without a passwd entry, and app uids
// (AppUid) have none, on the host or in the container's read-only /etc.
// nss_wrapper gives initdb one, for that one command.
constexpr const char* kNssWrapperPaths[] = {
    "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so",
    "/usr/lib/aarch64-linux-gnu/libnss_wrapper.so",
    "/usr/lib64/libnss_wrapper.so",
    "/usr/lib/libnss_wrapper.so",
};

std::string FindNssWrapper() {
  for (const char* path : kNssWrapperPaths) {
    if (PathExists(path)) return path;
  }
  return "";
}

// Buffer caches follow the memory limit: a quarter of it, 8 MiB to 128 MiB
// (the packages' own default), so a database fits its cgroup. Written into the
// database's own config on first run; the hoster may edit it later.
uint64_t CacheMiB(const Limits& limits) {
  if (limits.memory_bytes == 0) return 128;
  return std::clamp<uint64_t>(limits.memory_bytes / 4 >> 20, 8, 128);
}

bool IsExecutable(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

// Single-quoted for /bin/sh; safe for any byte string.
std::string ShellQuote(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  out += '\'';
  return out;
}

// Replaces every @KEY@ in `script`. Values are inserted verbatim (quote them
// first where the shell would split them).
std::string Fill(std::string_view script,
                 std::initializer_list<std::pair<std::string_view, std::string>> vars) {
  std::string out(script);
  for (const auto& [key, value] : vars) {
    std::string pattern = "@" + std::string(key) + "@";
    for (size_t at = out.find(pattern); at != std::string::npos;
         at = out.find(pattern, at + value.size())) {
      out.replace(at, pattern.size(), value);
    }
  }
  return out;
}

// "15" < "16", "9.6" < "10": numeric parts compared left to right.
bool VersionLess(const std::string& a, const std::string& b) {
  auto parts = [](const std::string& v) {
    std::vector<long> out;
    size_t i = 0;
    while (i < v.size()) {
      size_t j = v.find('.', i);
      if (j == std::string::npos) j = v.size();
      out.push_back(std::strtol(v.substr(i, j - i).c_str(), nullptr, 10));
      i = j + 1;
    }
    return out;
  };
  return parts(a) < parts(b);
}

bool IsVersionName(const std::string& name) {
  return !name.empty() && std::isdigit(static_cast<unsigned char>(name[0])) &&
         name.find_first_not_of("0123456789.") == std::string::npos;
}

// The highest PostgreSQL major version installed (Debian layout:
// /usr/lib/postgresql/<version>/bin/postgres), or "" when there is none.
std::string HighestPostgresVersion() {
  DIR* dir = ::opendir(kPostgresRoot);
  if (dir == nullptr) return "";
  std::string best;
  while (struct dirent* e = ::readdir(dir)) {
    std::string name = e->d_name;
    if (!IsVersionName(name)) continue;
    std::string bin = std::string(kPostgresRoot) + "/" + name + "/bin/";
    if (!IsExecutable(bin + "postgres") || !IsExecutable(bin + "initdb")) continue;
    if (best.empty() || VersionLess(best, name)) best = name;
  }
  ::closedir(dir);
  return best;
}

// busybox httpd: -f foreground, -vv logs each request with its status.
// An httpd.conf in the volume root (not in public/, so it is never served)
// adds basic auth, CGI or error pages; without one, /dev/null keeps the
// host's /etc/httpd.conf out. httpd has no SIGTERM handler of its own, which
// is fine as an ordinary process; in a container the runtime's init (tini)
// is PID 1, so the signal is not ignored there either.
constexpr std::string_view kStaticScript = R"SH(conf=/dev/null
if [ -f "$APP_DIR/httpd.conf" ]; then conf="$APP_DIR/httpd.conf"; fi
exec @BUSYBOX@ httpd -f -vv -p "127.0.0.1:$PORT" -h "$APP_DIR/public" -c "$conf")SH";

// Shell functions both database templates use on their first run.
constexpr std::string_view kFirstRunHelpers =
    R"SH(# hc_refuse_foreign DIR MESSAGE: stop when DIR holds files but no database.
hc_refuse_foreign() {
  if [ -d "$1" ] && [ -n "$(ls -A "$1")" ]; then
    echo "$2; not initialising over it" >&2
    exit 1
  fi
}
# hc_secret FILE: a random password in FILE, made only once.
hc_secret() {
  if [ ! -s "$1" ]; then
    od -An -vtx1 -N24 /dev/urandom | tr -d ' \n' >"$1.tmp"
    mv "$1.tmp" "$1"
  fi
})SH";

// First run: the data directory is built under a temporary name and renamed
// into place only when complete, so an init that was killed half way is
// simply redone on the next start. The password is generated once and kept
// (a hoster may also put their own there before the first start).
//
// Authentication is scram-sha-256 for TCP and for the Unix socket alike. The
// socket lives in /tmp: private to a runc container, but the host's shared
// /tmp in the process backend, where "trust" would make every local user a
// superuser (and "peer" cannot work: app uids have no user name).
constexpr std::string_view kPostgresScript = R"SH(set -eu
@FIRSTRUN@
umask 077
data="$APP_DIR/pgdata"
hc="$APP_DIR/.hc"
bin=@PGBIN@
if [ -f "$data/PG_VERSION" ]; then
  v=$(cat "$data/PG_VERSION")
  if [ "$v" != @PGVERSION@ ]; then
    bin="@PGROOT@/$v/bin"
    if [ ! -x "$bin/postgres" ]; then
      echo "hc postgres: $data holds PostgreSQL $v data but this machine has PostgreSQL @PGVERSION@; install the Debian package postgresql-$v (or upgrade the data with pg_upgrade)" >&2
      exit 1
    fi
  fi
else
  hc_refuse_foreign "$data" "hc postgres: $data is not empty but has no PG_VERSION"
  mkdir -p "$hc"
  pw="$hc/postgres-password"
  hc_secret "$pw"
  echo "hc postgres: first run, initdb into $data (superuser postgres, password in .hc/postgres-password)" >&2
  rm -rf "$data.init"
  printf 'postgres:x:%s:%s:PostgreSQL:%s:/bin/sh\n' "$(id -u)" "$(id -g)" "$APP_DIR" >"$hc/initdb-passwd"
  printf 'postgres:x:%s:\n' "$(id -g)" >"$hc/initdb-group"
  LD_PRELOAD=@NSSWRAPPER@ NSS_WRAPPER_PASSWD="$hc/initdb-passwd" NSS_WRAPPER_GROUP="$hc/initdb-group" \
    "$bin/initdb" -D "$data.init" -U postgres --pwfile="$pw" \
    --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 --data-checksums \
    --no-instructions >&2
  # A database named after the app: the proxies route PostgreSQL clients by
  # database name, so "dbname=<app>" reaches this server from any node.
  printf 'CREATE DATABASE "%s";\n' "$APP_NAME" |
    LD_PRELOAD=@NSSWRAPPER@ NSS_WRAPPER_PASSWD="$hc/initdb-passwd" NSS_WRAPPER_GROUP="$hc/initdb-group" \
    "$bin/postgres" --single -D "$data.init" postgres >/dev/null
  rm -f "$hc/initdb-passwd" "$hc/initdb-group"
  printf '\n# Set by HybridCluster on creation: a quarter of the memory limit.\nshared_buffers = @CACHEMB@MB\n' >>"$data.init/postgresql.conf"
  if [ -d "$data" ]; then rmdir "$data"; fi
  mv "$data.init" "$data"
fi
exec "$bin/postgres" -D "$data" -p "$PORT" -c listen_addresses=127.0.0.1 \
  -c unix_socket_directories=/tmp -c logging_collector=off -c log_destination=stderr)SH";

// First run as for postgres: mariadb-install-db into a temporary directory,
// then rename. Root may log in from 127.0.0.1, ::1 and the socket, always with
// the generated password (unix_socket auth cannot work: app uids have no user
// name, and the socket is in the shared /tmp in the process backend). The
// hostname account is dropped: hostnames differ between nodes and containers.
//
// $APP_DIR/mariadb.cnf holds the tunables and is the only option file read;
// /etc/mysql never is. Datadir, port, address, socket and pid file come from
// the command line, which wins over the file. The server binds no other port
// (no extra_port, no Galera), which the runtime's bind filter would refuse.
constexpr std::string_view kMariadbScript = R"SH(set -eu
@FIRSTRUN@
umask 077
data="$APP_DIR/mysql"
hc="$APP_DIR/.hc"
cnf="$APP_DIR/mariadb.cnf"
if [ ! -d "$data/mysql" ]; then
  hc_refuse_foreign "$data" "hc mariadb: $data is not empty but has no mysql system schema"
  mkdir -p "$hc"
  pw="$hc/mariadb-root-password"
  hc_secret "$pw"
  if [ ! -f "$cnf" ]; then
    cat >"$cnf" <<'HC_EOF'
# MariaDB options for this app (HybridCluster template "mariadb").
# datadir, port, bind-address, socket and pid-file are set by the template on
# the command line; values for them here are ignored.
[mariadbd]
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
skip-name-resolve
# A quarter of the app's memory limit when it was created.
innodb_buffer_pool_size = @CACHEMB@M
HC_EOF
  fi
  echo "hc mariadb: first run, mariadb-install-db into $data (user root, password in .hc/mariadb-root-password)" >&2
  rm -rf "$data.init"
  quoted=$(sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g" "$pw")
  cat >"$hc/mariadb-init.sql" <<HC_EOF
DELETE FROM mysql.global_priv WHERE User = 'root' AND Host NOT IN ('localhost', '127.0.0.1', '::1');
DELETE FROM mysql.proxies_priv WHERE User = 'root' AND Host NOT IN ('localhost', '127.0.0.1', '::1');
UPDATE mysql.global_priv SET Priv = JSON_SET(Priv, '\$.plugin', 'mysql_native_password', '\$.authentication_string', PASSWORD('$quoted')) WHERE User = 'root';
HC_EOF
  # Its advice (set a root password, run mariadb-secure-installation) does
  # not apply here, so its output is shown only when it fails.
  if ! @INSTALLDB@ --defaults-file="$cnf" --datadir="$data.init" --auth-root-authentication-method=normal \
    --skip-test-db --skip-name-resolve --extra-file="$hc/mariadb-init.sql" >"$hc/mariadb-install.log" 2>&1; then
    cat "$hc/mariadb-install.log" >&2
    rm -f "$hc/mariadb-init.sql" "$hc/mariadb-install.log"
    exit 1
  fi
  rm -f "$hc/mariadb-init.sql" "$hc/mariadb-install.log"
  if [ -d "$data" ]; then rmdir "$data"; fi
  mv "$data.init" "$data"
fi
if [ -f "$cnf" ]; then set -- --defaults-file="$cnf"; else set -- --no-defaults; fi
exec @MARIADBD@ "$@" --datadir="$data" --port="$PORT" --bind-address=127.0.0.1 \
  --socket="/tmp/mariadb-$PORT.sock" --pid-file="$data/mariadbd.pid")SH";

AppSpec BaseSpec(const TemplateRequest& req) {
  AppSpec spec;
  spec.name = req.app_name;
  spec.template_name = req.template_name;
  spec.env = req.env;
  spec.port = req.port;
  spec.volume_path = req.volume_path;
  spec.limits = req.limits;
  return spec;
}

std::vector<std::string> Shell(std::string script) {
  return {"/bin/sh", "-c", std::move(script)};
}

Result<AppSpec> StaticTemplate(const TemplateRequest& req) {
  if (!IsExecutable(kBusybox)) {
    return NotFound("template static needs busybox (" + std::string(kBusybox) +
                    "); install the Debian package busybox");
  }
  AppSpec spec = BaseSpec(req);
  spec.argv = Shell(Fill(kStaticScript, {{"BUSYBOX", kBusybox}}));
  spec.probe.kind = ProbeKind::kHttp;
  spec.probe.http_path = "/";
  return spec;
}

Result<AppSpec> CommandTemplate(const TemplateRequest& req) {
  if (req.command.find_first_not_of(" \t\n") == std::string::npos) {
    return InvalidArgument("template command needs a command line (for example \"exec ./server\")");
  }
  AppSpec spec = BaseSpec(req);
  spec.argv = Shell(req.command);
  spec.probe.kind = ProbeKind::kTcp;
  return spec;
}

Result<AppSpec> PostgresTemplate(const TemplateRequest& req) {
  std::string version = HighestPostgresVersion();
  if (version.empty()) {
    return NotFound("template postgres needs PostgreSQL (" + std::string(kPostgresRoot) +
                    "/<version>/bin/postgres); install the Debian package postgresql");
  }
  std::string nss_wrapper = FindNssWrapper();
  if (nss_wrapper.empty() && ::geteuid() == 0) {
    // As root the runtime runs apps as uids without a user name, which initdb refuses.
    return NotFound(
        "template postgres needs nss_wrapper (libnss_wrapper.so) to initialise as the app's "
        "user; install the Debian package libnss-wrapper");
  }
  AppSpec spec = BaseSpec(req);
  std::string bin = std::string(kPostgresRoot) + "/" + version + "/bin";
  spec.argv = Shell(Fill(kPostgresScript, {{"FIRSTRUN", std::string(kFirstRunHelpers)},
                                           {"PGBIN", ShellQuote(bin)},
                                           {"PGROOT", kPostgresRoot},
                                           {"PGVERSION", version},  // digits and dots only
                                           {"NSSWRAPPER", ShellQuote(nss_wrapper)},
                                           {"CACHEMB", std::to_string(CacheMiB(req.limits))}}));
  spec.probe.kind = ProbeKind::kTcp;
  spec.probe.timeout_ms = 60000;  // the first start includes initdb
  // SIGTERM is "smart" shutdown, which waits for every client to leave;
  // SIGINT ("fast") disconnects them and writes a checkpoint.
  spec.stop_signal = SIGINT;
  spec.stop_timeout_ms = 30000;
  return spec;
}

Result<AppSpec> MariadbTemplate(const TemplateRequest& req) {
  for (const char* path : {kMariadbd, kMariadbInstallDb}) {
    if (!IsExecutable(path)) {
      return NotFound("template mariadb needs " + std::string(path) +
                      "; install the Debian package mariadb-server");
    }
  }
  AppSpec spec = BaseSpec(req);
  spec.argv = Shell(Fill(kMariadbScript, {{"FIRSTRUN", std::string(kFirstRunHelpers)},
                                          {"MARIADBD", kMariadbd},
                                          {"INSTALLDB", kMariadbInstallDb},
                                          {"CACHEMB", std::to_string(CacheMiB(req.limits))}}));
  spec.probe.kind = ProbeKind::kTcp;
  spec.probe.timeout_ms = 60000;  // the first start includes mariadb-install-db
  spec.stop_signal = SIGTERM;     // a normal shutdown that flushes InnoDB
  spec.stop_timeout_ms = 30000;
  return spec;
}

std::string HtmlEscape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

constexpr std::string_view kWelcomePage = R"(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@NAME@</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 40em; margin: 4em auto; padding: 0 1em;
         color: #222; line-height: 1.5; }
  code { background: #f2f2f2; padding: 0.1em 0.3em; border-radius: 3px; }
</style>
</head>
<body>
<h1>Welcome to @NAME@</h1>
<p>This site is up and running on HybridCluster.</p>
<p>To change this page, replace <code>public/index.html</code> in the app's volume.
Everything in <code>public/</code> is served as it is.</p>
</body>
</html>
)";

// Makes `fd` belong to the volume's owner, so the app (which runs as that
// user) can change what was seeded.
Status ChownLike(int fd, const struct stat& owner, const std::string& path) {
  if (::geteuid() != 0) return Status::Ok();
  if (::fchown(fd, owner.st_uid, owner.st_gid) != 0) return ErrnoStatus("chown " + path, errno);
  return Status::Ok();
}

Status SeedStatic(const std::string& volume_path, const std::string& app_name) {
  // The volume may already hold app-written files: every step is relative to
  // a directory fd and refuses symlinks, so nothing is written outside it.
  int raw = ::open(volume_path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (raw < 0) {
    if (errno == ENOENT) return NotFound("volume path " + volume_path + " does not exist");
    return ErrnoStatus("open " + volume_path, errno);
  }
  UniqueFd volume(raw);
  struct stat owner;
  if (::fstat(volume.get(), &owner) != 0) return ErrnoStatus("stat " + volume_path, errno);

  const std::string public_dir = JoinPath(volume_path, "public");
  if (::mkdirat(volume.get(), "public", 0755) != 0) {
    if (errno == EEXIST) return Status::Ok();  // the hoster's content stays as it is
    return ErrnoStatus("mkdir " + public_dir, errno);
  }
  raw = ::openat(volume.get(), "public", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (raw < 0) return ErrnoStatus("open " + public_dir, errno);
  UniqueFd dir(raw);
  HC_RETURN_IF_ERROR(ChownLike(dir.get(), owner, public_dir));

  const std::string index = JoinPath(public_dir, "index.html");
  raw =
      ::openat(dir.get(), "index.html", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (raw < 0) return ErrnoStatus("create " + index, errno);
  UniqueFd file(raw);
  const std::string page = Fill(kWelcomePage, {{"NAME", HtmlEscape(app_name)}});
  for (size_t done = 0; done < page.size();) {
    ssize_t n = ::write(file.get(), page.data() + done, page.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write " + index, errno);
    }
    done += static_cast<size_t>(n);
  }
  return ChownLike(file.get(), owner, index);
}

bool IsTemplateName(const std::string& name) {
  std::vector<std::string> names = TemplateNames();
  return std::find(names.begin(), names.end(), name) != names.end();
}

std::string UnknownTemplate(const std::string& name) {
  std::string known;
  for (const std::string& n : TemplateNames()) known += (known.empty() ? "" : ", ") + n;
  return "unknown template '" + name + "'; templates are " + known;
}

}  // namespace

std::vector<std::string> TemplateNames() {
  return {"static", "command", "postgres", "mariadb"};
}

Result<AppSpec> ApplyTemplate(const TemplateRequest& req) {
  if (!IsTemplateName(req.template_name))
    return InvalidArgument(UnknownTemplate(req.template_name));
  if (req.template_name != "command" && !req.command.empty()) {
    return InvalidArgument("a command line is only for template command, not " + req.template_name);
  }
  if (req.template_name == "static") return StaticTemplate(req);
  if (req.template_name == "command") return CommandTemplate(req);
  if (req.template_name == "postgres") return PostgresTemplate(req);
  return MariadbTemplate(req);
}

Status SeedVolume(const std::string& template_name, const std::string& volume_path,
                  const std::string& app_name) {
  if (!IsTemplateName(template_name)) return InvalidArgument(UnknownTemplate(template_name));
  if (template_name == "static") return SeedStatic(volume_path, app_name);
  // The databases initialise themselves on first start, as the app's user.
  if (!PathExists(volume_path)) return NotFound("volume path " + volume_path + " does not exist");
  return Status::Ok();
}

}  // namespace hc::runtime
