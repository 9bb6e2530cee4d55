// Serves the DNS of a synthetic cluster (3 nodes in 2 DCs, N apps with a
// domain each, half of them with an alias) with our server, and writes the
// same zones as zone files (what `hc dns show` prints) plus a dnsperf query
// file, so bench/dns_bench.sh can serve them with NSD and Knot too.
//
//   dns_bench_server --listen 127.0.0.81:10053 --apps 1000 --workers 1 --out DIR
//
// Runs until SIGTERM/SIGINT; then prints the server's counters and its own
// CPU time (it does nothing else meanwhile, so that is the server's cost).
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "dns/answer.h"
#include "dns/server.h"
#include "dns/zone.h"

namespace {

volatile sig_atomic_t g_stop = 0;
void OnSignal(int) {
  g_stop = 1;
}

class Adapter : public hc::dns::Responder {
 public:
  explicit Adapter(std::shared_ptr<const hc::dns::Answerer> a) : a_(std::move(a)) {}
  size_t Respond(std::span<const uint8_t> q, hc::dns::Transport t,
                 std::span<uint8_t> out) const override {
    return a_->Respond(q, t == hc::dns::Transport::kTcp, out);
  }

 private:
  std::shared_ptr<const hc::dns::Answerer> a_;
};

int Usage() {
  std::fprintf(stderr,
               "usage: dns_bench_server --out DIR [--listen ADDR:PORT] [--apps N] [--workers N]\n"
               "Serves a synthetic cluster's zones; writes DIR/<zone>.zone and DIR/queries.txt.\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.81:10053", out;
  int apps = 1000, workers = 1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--listen")
      listen = next();
    else if (a == "--apps")
      apps = std::atoi(next().c_str());
    else if (a == "--workers")
      workers = std::atoi(next().c_str());
    else if (a == "--out")
      out = next();
    else
      return Usage();
  }
  if (out.empty() || apps < 1) return Usage();

  hc::dns::DnsSettings s;
  s.zones = {"hosting.example.net", "customer.org"};
  std::vector<hc::dns::NodeEntry> nodes = {{"node1", "dc1", {"127.0.0.11"}, false},
                                           {"node2", "dc1", {"127.0.0.12"}, false},
                                           {"node3", "dc2", {"127.0.0.13"}, false}};
  std::vector<hc::dns::AppEntry> entries;
  for (int i = 0; i < apps; ++i) {
    std::string n = "app" + std::to_string(i);
    hc::dns::AppEntry e{n, {n + ".customer.org"}, {}};
    if (i % 2 == 0) e.aliases.push_back("www." + n + ".customer.org");
    entries.push_back(e);
  }
  auto t0 = std::chrono::steady_clock::now();
  hc::dns::ZoneSet zones = hc::dns::BuildZones(s, nodes, entries, 1);
  for (const auto& z : zones.zones) {
    std::ofstream(out + "/" + z.apex + ".zone") << hc::dns::ZoneFileText(zones, z);
  }
  // The query mix: mostly A of app domains, then AAAA (NODATA), aliases
  // (CNAME + A), and names that do not exist (NXDOMAIN).
  {
    std::ofstream q(out + "/queries.txt");
    for (int i = 0; i < apps; ++i) {
      std::string n = "app" + std::to_string(i) + ".customer.org";
      q << n << " A\n" << n << " A\n" << n << " A\n" << n << " A\n" << n << " A\n";
      q << n << " AAAA\n";
      if (i % 2 == 0) q << "www." << n << " A\n";
      q << "nx" << i << ".customer.org A\n";
    }
  }
  auto answerer = hc::dns::Answerer::Compile(zones);
  double build_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  hc::dns::ServerOptions so;
  size_t colon = listen.rfind(':');
  so.listen.push_back(
      {listen.substr(0, colon), static_cast<uint16_t>(std::atoi(listen.c_str() + colon + 1))});
  so.udp_workers = workers;
  hc::dns::Server server(so);
  hc::Status st = server.Start(std::make_shared<Adapter>(answerer));
  if (!st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 1;
  }
  std::printf("serving %zu names (%zu KiB of images, built in %.0f ms) on %s with %d worker(s)\n",
              answerer->names(), answerer->image_bytes() / 1024, build_ms, listen.c_str(), workers);
  std::fflush(stdout);
  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  while (!g_stop) pause();
  hc::dns::ServerStats stats = server.stats();
  server.Stop();
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu =
      ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  std::printf("udp queries %llu, responses %llu, dropped %llu; cpu %.2f s\n",
              static_cast<unsigned long long>(stats.udp_queries),
              static_cast<unsigned long long>(stats.udp_responses),
              static_cast<unsigned long long>(stats.dropped), cpu);
  return 0;
}
