// hcd: the HybridCluster node daemon. Not yet: the cluster (etcd membership,
// reconcile loop, API) is the next milestone; see docs/design.md.
#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--version") == 0) {
      std::printf("hcd 0.1.0\n");
      return 0;
    }
  }
  std::fprintf(stderr,
               "hcd 0.1.0: the node daemon is not implemented yet; this build provides the\n"
               "storage engine only. Use `hc volume --help` and `hc demo` for local volumes.\n");
  return 2;
}
