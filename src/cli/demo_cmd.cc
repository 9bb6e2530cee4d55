// `hc demo`: a real cluster on this machine (etcd + three hcd nodes on
// loopback), a sample website created through the API and placed by the
// leader, visited with curl, and its snapshots shown. `hc demo stop` removes
// everything it started.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "cli/api_client.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "common/fs.h"
#include "common/subprocess.h"
#include "devcluster/local_cluster.h"
#include "runtime/runtime.h"

namespace hc::cli {
namespace {

using json = nlohmann::json;

std::string DefaultDemoDir() {
  return "/tmp/hybridcluster-demo-" + std::to_string(::getuid());
}

void Step(const std::string& title, const std::string& command) {
  std::printf("\n== %s\n", title.c_str());
  if (!command.empty()) std::printf("   $ %s\n", command.c_str());
  std::fflush(stdout);
}

std::string SelfExe() {
  std::string p = SelfExePath();
  return p.empty() ? "hc" : p;
}

// Prints text indented, each line after `prefix`, at most max_lines lines.
void PrintIndented(const std::string& text, const char* prefix, int max_lines = 1000) {
  size_t start = 0;
  int lines = 0;
  while (start < text.size() && lines++ < max_lines) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    std::printf("%s%.*s\n", prefix, static_cast<int>(nl - start), text.c_str() + start);
    start = nl + 1;
  }
}

// Runs `hc ARGS...` (this binary) and indents what it prints.
void RunHc(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {SelfExe()};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = RunCommand(argv);
  if (!r.ok()) return;
  PrintIndented(r->err + r->out, "   ");
}

// What a visitor of the site sees, fetched with the real curl (`resolve`:
// curl's --resolve HOST:PORT:ADDR, to reach a name through a chosen node).
void ShowPage(const std::string& url, const std::string& resolve = "") {
  std::vector<std::string> argv = {"curl", "-sf", "--max-time", "5", url};
  if (!resolve.empty()) argv.insert(argv.begin() + 1, {"--resolve", resolve});
  std::printf("   $ curl %s%s\n", resolve.empty() ? "" : ("--resolve " + resolve + " ").c_str(),
              url.c_str());
  // The proxies learn a new app's port a few milliseconds after the API shows it.
  auto r = RunCommand(argv);
  for (int i = 0; i < 30 && (!r.ok() || !r->ok()); ++i) {
    usleep(100 * 1000);
    r = RunCommand(argv);
  }
  if (!r.ok() || !r->ok()) {
    std::printf("   (curl %s failed)\n", url.c_str());
    return;
  }
  PrintIndented(r->out, "   | ", 12);
}

bool IsDemoClientConfig(const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.ok()) return false;
  json j = json::parse(*text, nullptr, false);
  return j.is_object() && j.value("demo", false);
}

Status StopDemo(const std::string& dir, bool quiet) {
  if (!PathExists(JoinPath(dir, "cluster.json"))) {
    if (PathExists(dir)) HC_RETURN_IF_ERROR(RemoveTree(dir));
    if (!quiet) std::printf("no demo cluster in %s; nothing to stop\n", dir.c_str());
    return Status::Ok();
  }
  HC_ASSIGN_OR_RETURN(auto c, devcluster::LocalCluster::Load(dir));
  HC_RETURN_IF_ERROR(c.Destroy());
  std::string cfg = ClientConfigPath();
  if (IsDemoClientConfig(cfg)) ::unlink(cfg.c_str());
  if (!quiet)
    std::printf("stopped the demo cluster (etcd, %d nodes, their apps) and removed %s\n", c.nodes(),
                dir.c_str());
  return Status::Ok();
}

Status RunDemo(const std::string& dir, int nodes, const std::string& runtime_backend) {
  if (PathExists(JoinPath(dir, "cluster.json"))) {
    auto old = devcluster::LocalCluster::Load(dir);
    if (old.ok() && old->NodeRunning(1))
      return AlreadyExists("a demo cluster is already running in " + dir +
                           " (hc cluster status shows it; hc demo stop removes it)");
    HC_RETURN_IF_ERROR(StopDemo(dir, true));  // leftovers of a crashed demo
  }
  devcluster::LocalClusterOptions o;
  o.base_dir = dir;
  o.nodes = nodes;
  o.runtime_backend = runtime_backend;
  o.dns_zones = {"demo.test"};
  o.dns_port = geteuid() == 0 ? 53 : 10053;  // 53 needs root
  o.proxy_port = geteuid() == 0 ? 80 : 10080;
  o.replication_interval_seconds = 2;  // snappy for a demo; production default 30
  o.progress = [](const std::string& line) {
    std::printf("   %s\n", line.c_str());
    std::fflush(stdout);
  };
  std::printf("HybridCluster demo: a %d-node cluster on this machine (files in %s)\n", nodes,
              dir.c_str());
  Step("start a real etcd and " + std::to_string(nodes) + " hcd nodes on loopback addresses", "");
  HC_ASSIGN_OR_RETURN(auto cluster, devcluster::LocalCluster::Create(o));
  Status s = cluster.Start();
  if (!s.ok()) {
    (void)cluster.Destroy();
    return s;
  }

  // Let plain `hc` commands find this cluster, unless the user has a real one configured.
  std::string api = cluster.ApiUrl(1);
  std::string cfg_path = ClientConfigPath();
  std::string api_flag;
  if (!PathExists(cfg_path) || IsDemoClientConfig(cfg_path)) {
    auto slash = cfg_path.rfind('/');
    Status w = MakeDirs(cfg_path.substr(0, slash), 0700);
    if (w.ok())
      w = WriteFileAtomic(cfg_path, json{{"api", api}, {"demo", true}}.dump(2) + "\n", true);
    if (w.ok()) {
      std::printf("   hc now talks to this cluster (%s written)\n", cfg_path.c_str());
    } else {
      api_flag = "--api " + api;
      std::printf("   (cannot write %s: %s; use --api %s or export HC_API=%s)\n", cfg_path.c_str(),
                  w.message().c_str(), api.c_str(), api.c_str());
    }
  } else {
    api_flag = "--api " + api;
    std::printf("   (%s points at another cluster: the commands below use --api %s)\n",
                cfg_path.c_str(), api.c_str());
  }
  ApiFlags f;
  f.api = api;

  Step("create a website; the leader places it on the least-loaded node, with a replica elsewhere",
       "hc app create hello --template static --domain hello.demo.test --replicas 1" +
           (api_flag.empty() ? "" : " " + api_flag));
  RunHc({"app", "create", "hello", "--template", "static", "--domain", "hello.demo.test",
         "--replicas", "1", "--memory", "64M", "--api", api});

  Step("the cluster: nodes, leader, and where the app runs",
       "hc cluster status" + (api_flag.empty() ? "" : " " + api_flag));
  RunHc({"cluster", "status", "--api", api});

  HC_ASSIGN_OR_RETURN(auto text, CallApi(f, "GET", "/v1/apps/hello"));
  json app = json::parse(text, nullptr, false);
  std::string primary = app["placement"].is_object() ? app["placement"].value("primary", "") : "";
  int port = 0;
  for (const auto& st : app["status"])
    if (st.value("node", "") == primary) port = st.value("port", 0);
  if (primary.empty() || port == 0)
    return Unavailable("the sample site did not start; see the node logs in " + dir);
  int k = std::atoi(primary.c_str() + 4);  // "nodeK"
  std::string pport = o.proxy_port == 80 ? "" : ":" + std::to_string(o.proxy_port);
  std::string url = "http://hello.demo.test" + pport + "/";
  int other = k % nodes + 1;  // a node that does not run it
  std::string via_other =
      "hello.demo.test:" + std::to_string(o.proxy_port) + ":" + cluster.NodeAddress(other);
  Step("visit it by its domain through node" + std::to_string(other) + "'s proxy (it runs on " +
           primary + "; any node's proxy forwards there)",
       "");
  ShowPage(url, via_other);

  std::string dns_at =
      "@127.0.0.11" + (o.dns_port == 53 ? "" : " -p " + std::to_string(o.dns_port));
  Step("every node answers DNS for the site: one address per live node (any node serves any app)",
       "dig " + dns_at + " hello.demo.test +noall +answer");
  {
    std::vector<std::string> argv = {"dig",
                                     "@127.0.0.11",
                                     "-p",
                                     std::to_string(o.dns_port),
                                     "hello.demo.test",
                                     "+noall",
                                     "+answer",
                                     "+time=2",
                                     "+tries=2"};
    auto r = RunCommand(argv);
    if (!r.ok() || r->exit_code != 0) {
      std::printf(
          "   (dig is not installed or failed: scripts/install.sh installs bind9-dnsutils)\n");
    } else {
      PrintIndented(r->out, "   | ");
    }
  }
  Step("the zone as the cluster serves it",
       "hc dns show" + (api_flag.empty() ? "" : " " + api_flag));
  RunHc({"dns", "show", "--zone", "demo.test", "--api", api});

  // Snapshots of the app's volume on its primary node.
  std::string root = JoinPath(cluster.NodeDataDir(k), "volumes");
  std::string vflags = "--root " + root;
  HC_ASSIGN_OR_RETURN(auto store, storage::OpenStore({"dir", root, "", true}));
  HC_ASSIGN_OR_RETURN(std::string live, store->LivePath("hello"));
  Step("snapshot the site's volume", "hc volume " + vflags + " snapshot hello v1");
  HC_ASSIGN_OR_RETURN(auto s1, store->Snapshot("hello", "v1", {}));
  std::printf("   v1: %llu files, id %s\n", static_cast<unsigned long long>(s1.file_count),
              s1.id.substr(0, 16).c_str());

  std::printf("\n== the customer edits the site\n");
  HC_RETURN_IF_ERROR(WriteFileAtomic(
      live + "/public/index.html",
      "<h1>Hello from HybridCluster</h1>\n<p>Edited by the customer.</p>\n", false));
  ShowPage(url, via_other);
  Step("snapshot again and see what changed",
       "hc volume " + vflags + " snapshot hello v2 && hc volume " + vflags + " diff hello v1 v2");
  HC_ASSIGN_OR_RETURN(auto s2, store->Snapshot("hello", "v2", {}));
  (void)s2;
  HC_ASSIGN_OR_RETURN(auto diff, store->Diff("hello", "v1", "v2"));
  for (const auto& e : diff) std::printf("   %s %s\n", DiffKindName(e.kind), e.path.c_str());
  Step("the site's snapshots (the customer's timeline)",
       "hc volume " + vflags + " snapshots hello");
  RunHc({"volume", "--root", root, "snapshots", "hello"});
  Step("browse the old version without restoring it",
       "hc volume " + vflags + " cat hello v1 public/index.html");
  StringSink page;
  HC_RETURN_IF_ERROR(store->ReadFile("hello", "v1", "public/index.html", page));
  std::printf("   | %s\n", page.out.substr(0, page.out.find('\n')).c_str());

  // Continuous replication: the replica node holds the snapshots too.
  Step("the replica on another node already holds the newest snapshot (checked every 2 s)",
       "hc app show hello" + (api_flag.empty() ? "" : " " + api_flag));
  for (int i = 0; i < 100; ++i) {
    auto rep = CallApi(f, "GET", "/v1/apps/hello/replication");
    json j = rep.ok() ? json::parse(*rep, nullptr, false) : json();
    if (j.is_object() && j["replicas"].is_array() && !j["replicas"].empty() &&
        j["replicas"][0].value("state", "") == "in_sync" &&
        j["replicas"][0].value("newest_snapshot", "") != s1.id)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  RunHc({"app", "show", "hello", "--api", api});

  std::string a = api_flag.empty() ? "" : " " + api_flag;
  std::string stop = "hc demo stop" + (dir == DefaultDemoDir() ? "" : " --dir " + dir);
  std::printf(
      "\nDone. The cluster keeps running:\n"
      "  hc cluster status%s            nodes, leader, apps\n"
      "  hc app show hello%s            where the site runs, its status on each node\n"
      "  hc app create NAME --template static|command|postgres|mariadb%s\n"
      "  curl --resolve %s %s\n"
      "  dig %s hello.demo.test      hc dns show%s\n"
      "  logs: %s/node1.log ... node%d.log, etcd.log\n"
      "Stop everything it started with: %s\n",
      a.c_str(), a.c_str(), a.c_str(), via_other.c_str(), url.c_str(), dns_at.c_str(), a.c_str(),
      dir.c_str(), nodes, stop.c_str());
  return Status::Ok();
}

}  // namespace

void AddDemoCommand(CLI::App& app, int* exit_code) {
  auto* demo = app.add_subcommand(
      "demo",
      "Start a local cluster (real etcd + 3 hcd nodes on loopback), create a sample website, "
      "show where it runs and its snapshots");
  static std::string dir = DefaultDemoDir();
  static int nodes = 3;
  static std::string runtime_backend = "auto";
  demo->add_option("--dir", dir, "Where the demo keeps its files")->capture_default_str();
  demo->add_option("--nodes", nodes, "Number of nodes (1-9)")->capture_default_str();
  demo->add_option("--runtime", runtime_backend, "App runtime: auto, runc or process")
      ->capture_default_str();
  auto* stop =
      demo->add_subcommand("stop", "Stop the demo cluster and its apps, and remove its files");
  auto* clean = demo->add_subcommand("clean", "Same as stop");
  auto do_stop = [exit_code] {
    Status s = StopDemo(dir, false);
    *exit_code = s.ok() ? 0 : Fail(s);
  };
  stop->callback(do_stop);
  clean->callback(do_stop);
  demo->callback([exit_code, stop, clean] {
    if (stop->parsed() || clean->parsed()) return;  // CLI11 also runs the parent's callback
    Status s = RunDemo(dir, nodes, runtime_backend);
    *exit_code = s.ok() ? 0 : Fail(s);
  });
}

}  // namespace hc::cli
