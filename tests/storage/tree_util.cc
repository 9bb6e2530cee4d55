#include "storage/tree_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace hc::storage::testing {
namespace {

void Walk(const std::string& base, const std::string& rel, bool with_mtime, TreeState* out) {
  std::string dir = rel.empty() ? base : base + "/" + rel;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) throw std::runtime_error("opendir " + dir);
  while (struct dirent* e = ::readdir(d)) {
    if (!std::strcmp(e->d_name, ".") || !std::strcmp(e->d_name, "..")) continue;
    std::string r = rel.empty() ? e->d_name : rel + "/" + e->d_name;
    std::string p = base + "/" + r;
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0) continue;
    NodeState n;
    n.mode = st.st_mode & 07777;
    if (S_ISDIR(st.st_mode)) {
      n.type = 'd';
      (*out)[r] = n;
      Walk(base, r, with_mtime, out);
    } else if (S_ISLNK(st.st_mode)) {
      n.type = 'l';
      n.mode = 0;  // symlink permissions are meaningless on Linux
      char buf[4096];
      ssize_t k = ::readlink(p.c_str(), buf, sizeof buf);
      n.content.assign(buf, k > 0 ? static_cast<size_t>(k) : 0);
      (*out)[r] = n;
    } else if (S_ISREG(st.st_mode)) {
      n.content = ReadWholeFile(p);
      if (with_mtime) n.mtime_ns = st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec;
      (*out)[r] = n;
    }
  }
  ::closedir(d);
}

}  // namespace

TreeState CaptureTree(const std::string& dir, bool with_mtime) {
  TreeState t;
  Walk(dir, "", with_mtime, &t);
  return t;
}

std::string DescribeDifference(const TreeState& a, const TreeState& b) {
  std::ostringstream os;
  for (const auto& [p, n] : a) {
    auto it = b.find(p);
    if (it == b.end()) {
      os << "only in first: " << p << "\n";
    } else if (!(it->second == n)) {
      os << "differs: " << p << " (type " << n.type << "/" << it->second.type << ", mode "
         << std::oct << n.mode << "/" << it->second.mode << std::dec << ", size "
         << n.content.size() << "/" << it->second.content.size() << ", mtime " << n.mtime_ns << "/"
         << it->second.mtime_ns << ")\n";
    }
  }
  for (const auto& [p, n] : b) {
    if (!a.count(p)) os << "only in second: " << p << "\n";
  }
  return os.str();
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw std::runtime_error("cannot write " + path);
  f << content;
}

std::string ReadWholeFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

}  // namespace hc::storage::testing
