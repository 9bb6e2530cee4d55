// Runs the HTTP proxy engine (src/proxy/http_proxy.h) standalone in front of
// one backend, for bench/proxy_bench.sh:
//
//   proxy_bench_server --listen 127.0.0.93:8080 --backend 127.0.0.90:8080
//                      --host '*' --workers 1
//
// Routes requests for --host (any host with '*') to --backend. Prints its
// pid once listening; runs until SIGTERM/SIGINT, then prints the proxy's
// counters and its own CPU time (it does nothing else, so that is the
// proxy's cost).
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "net/socket.h"
#include "proxy/http_proxy.h"
#include "proxy/route_table.h"

namespace {

int Usage() {
  std::fprintf(stderr,
               "usage: proxy_bench_server --listen ADDR:PORT --backend ADDR:PORT [--host NAME|'*']"
               " [--workers N]\n");
  return 2;
}

double Seconds(const struct timeval& tv) {
  return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen, backend, host = "*";
  int workers = 1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--listen")
      listen = next();
    else if (a == "--backend")
      backend = next();
    else if (a == "--host")
      host = next();
    else if (a == "--workers")
      workers = std::atoi(next().c_str());
    else
      return Usage();
  }
  if (listen.empty() || backend.empty() || host.empty()) return Usage();
  auto at = hc::net::ParseHostPort(listen);
  auto to = hc::net::ParseHostPort(backend);
  if (!at.ok() || !to.ok()) {
    std::fprintf(stderr, "proxy_bench_server: %s\n",
                 (!at.ok() ? at.status() : to.status()).ToString().c_str());
    return 2;
  }
  auto routes = hc::proxy::RouteTable::Build({{"bench", {host}, *to}});
  if (!routes.ok()) {
    std::fprintf(stderr, "proxy_bench_server: %s\n", routes.status().ToString().c_str());
    return 2;
  }

  // Signals are taken by sigwait below, not by handlers in a worker thread.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  hc::proxy::ProxyOptions opts;
  opts.listen = {*at};
  opts.workers = workers;
  hc::proxy::HttpProxy proxy(opts);
  hc::Status s = proxy.Start(*routes);
  if (!s.ok()) {
    std::fprintf(stderr, "proxy_bench_server: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("pid %d: proxying %s for host '%s' to %s with %d worker(s)\n", ::getpid(),
              proxy.bound()[0].ToString().c_str(), host.c_str(), to->ToString().c_str(), workers);
  std::fflush(stdout);

  int sig = 0;
  sigwait(&set, &sig);
  hc::proxy::ProxyStats st = proxy.stats();
  proxy.Stop();

  struct rusage ru;
  ::getrusage(RUSAGE_SELF, &ru);
  std::printf("connections: accepted %llu, refused %llu, open %lld; proxy answers (errors) %llu\n",
              static_cast<unsigned long long>(st.connections_accepted),
              static_cast<unsigned long long>(st.connections_refused),
              static_cast<long long>(st.connections_open),
              static_cast<unsigned long long>(st.errors));
  for (const auto& [app, a] : st.apps) {
    std::printf("app %s: requests %llu, bytes in %llu, out %llu\n  latency ms:", app.c_str(),
                static_cast<unsigned long long>(a.requests),
                static_cast<unsigned long long>(a.bytes_in),
                static_cast<unsigned long long>(a.bytes_out));
    for (size_t i = 0; i < hc::proxy::kLatencyBuckets; ++i) {
      if (i < hc::proxy::kLatencyBoundsMs.size()) {
        std::printf(" <=%d:%llu", hc::proxy::kLatencyBoundsMs[i],
                    static_cast<unsigned long long>(a.latency[i]));
      } else {
        std::printf(" more:%llu", static_cast<unsigned long long>(a.latency[i]));
      }
    }
    std::printf("\n");
  }
  std::printf("cpu: user %.2f s, system %.2f s; max RSS %ld KiB\n", Seconds(ru.ru_utime),
              Seconds(ru.ru_stime), ru.ru_maxrss);
  return 0;
}
