#include "cli/cli_util.h"

#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace hc::cli {
namespace {
int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000LL + ts.tv_nsec / 1'000'000;
}
std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}
}  // namespace

std::string DefaultStoreRoot() {
  if (::geteuid() == 0) return "/var/lib/hybridcluster/store";
  std::string xdg = Env("XDG_DATA_HOME");
  if (!xdg.empty()) return xdg + "/hybridcluster/store";
  return Env("HOME") + "/.local/share/hybridcluster/store";
}

void StoreFlags::AddTo(CLI::App& app) {
  backend = Env("HC_STORE_BACKEND").empty() ? "dir" : Env("HC_STORE_BACKEND");
  root = Env("HC_STORE_ROOT").empty() ? DefaultStoreRoot() : Env("HC_STORE_ROOT");
  dataset = Env("HC_ZFS_DATASET");
  app.add_option("--backend", backend, "Storage backend: dir or zfs [env HC_STORE_BACKEND]")
      ->check(CLI::IsMember({"dir", "zfs"}))
      ->capture_default_str();
  app.add_option("--root", root, "dir backend: the store directory [env HC_STORE_ROOT]")
      ->capture_default_str();
  app.add_option("--dataset", dataset,
                 "zfs backend: parent dataset of the volumes, e.g. tank/hc [env HC_ZFS_DATASET]");
  app.add_flag("--no-sync", no_sync,
               "dir backend: do not flush to disk before recording (benchmarks, scratch stores)");
}

Result<std::unique_ptr<storage::Store>> StoreFlags::Open() const {
  if (backend == "zfs" && dataset.empty()) {
    return InvalidArgument("the zfs backend needs --dataset POOL/PATH (or HC_ZFS_DATASET)");
  }
  return storage::OpenStore({backend, root, dataset, !no_sync});
}

int Fail(const Status& s) {
  std::fprintf(stderr, "hc: %s\n", s.ToString().c_str());
  switch (s.code()) {
    case Code::kInvalidArgument: return 2;
    case Code::kNotFound: return 3;
    case Code::kConflict:
    case Code::kAlreadyExists: return 4;
    case Code::kCorrupt: return 5;
    default: return 1;
  }
}

Progress::Progress(std::string what, bool enabled)
    : what_(std::move(what)), enabled_(enabled && ::isatty(2)) {
  start_ms_ = last_ms_ = NowMs();
}

void Progress::Add(uint64_t bytes) {
  bytes_ += bytes;
  if (!enabled_) return;
  int64_t now = NowMs();
  if (now - last_ms_ < 500) return;
  last_ms_ = now;
  double secs = static_cast<double>(now - start_ms_) / 1000.0;
  std::fprintf(stderr, "\r%s: %s (%s/s)   ", what_.c_str(), FormatBytes(bytes_).c_str(),
               FormatBytes(static_cast<uint64_t>(static_cast<double>(bytes_) / secs)).c_str());
}

void Progress::Done() {
  if (!enabled_) return;
  double secs = static_cast<double>(NowMs() - start_ms_) / 1000.0;
  std::fprintf(stderr, "\r%s: %s in %.1f s            \n", what_.c_str(),
               FormatBytes(bytes_).c_str(), secs);
}

std::string FormatBytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::string FormatTime(int64_t unix_ns) {
  time_t t = static_cast<time_t>(unix_ns / 1'000'000'000);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

}  // namespace hc::cli
