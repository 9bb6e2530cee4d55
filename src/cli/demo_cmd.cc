// `hc demo`: a short, real walk through the storage engine on this machine.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "common/fs.h"
#include "common/subprocess.h"
#include "runtime/cgroup.h"
#include "runtime/runtime.h"
#include "runtime/templates.h"

namespace hc::cli {
namespace {

std::string DefaultDemoDir() {
  return "/tmp/hybridcluster-demo-" + std::to_string(::getuid());
}

void Step(const std::string& title, const std::string& command) {
  std::printf("\n== %s\n   $ %s\n", title.c_str(), command.c_str());
}

Status WriteText(const std::string& path, const std::string& text) {
  return WriteFileAtomic(path, text, false);
}

// The demo's apps live in their own runtime state and cgroup parent, so
// `hc demo clean` stops exactly them.
Result<std::unique_ptr<runtime::Runtime>> DemoRuntime(const std::string& dir) {
  runtime::RuntimeConfig c;
  c.state_dir = dir + "/runtime";
  c.cgroup_parent = "hc-demo";
  return runtime::OpenRuntime(c);
}

Status StopDemoApps(const std::string& dir) {
  if (!PathExists(dir + "/runtime")) return Status::Ok();
  HC_ASSIGN_OR_RETURN(auto rt, DemoRuntime(dir));
  HC_ASSIGN_OR_RETURN(auto apps, rt->List());
  for (const auto& a : apps) {
    HC_RETURN_IF_ERROR(rt->Stop(a.name));
    std::printf("stopped demo app '%s'\n", a.name.c_str());
  }
  if (::geteuid() == 0) (void)runtime::Cgroup(runtime::DetectCgroupMode(), "hc-demo").Remove();
  return Status::Ok();
}

// What a visitor of the site sees, fetched with the real curl.
void ShowPage(uint16_t port, const std::string& path) {
  std::string url = "http://127.0.0.1:" + std::to_string(port) + path;
  auto r = RunCommand({"curl", "-s", "--max-time", "5", url});
  if (!r.ok() || !r->ok()) {
    std::printf("   (curl %s failed)\n", url.c_str());
    return;
  }
  std::printf("   $ curl %s\n", url.c_str());
  size_t start = 0;
  while (start < r->out.size()) {
    size_t nl = r->out.find('\n', start);
    if (nl == std::string::npos) nl = r->out.size();
    std::printf("   | %.*s\n", static_cast<int>(nl - start), r->out.c_str() + start);
    start = nl + 1;
  }
}

Status RunDemo(const std::string& dir) {
  HC_RETURN_IF_ERROR(StopDemoApps(dir));
  HC_RETURN_IF_ERROR(RemoveTree(dir));
  std::string root = dir + "/store";
  std::string flags = "--root " + root;
  std::printf("HybridCluster volume demo (store in %s)\n", root.c_str());
  HC_ASSIGN_OR_RETURN(auto store, storage::OpenStore({"dir", root, "", true}));
  storage::Store& st = *store;

  Step("create a volume for a website", "hc volume " + flags + " create site");
  HC_RETURN_IF_ERROR(st.CreateVolume("site"));
  HC_ASSIGN_OR_RETURN(std::string live, st.LivePath("site"));
  HC_RETURN_IF_ERROR(MakeDirs(live + "/public"));
  HC_RETURN_IF_ERROR(
      WriteText(live + "/public/index.html", "<h1>Welcome to the sample shop</h1>\n"));
  HC_RETURN_IF_ERROR(WriteText(live + "/public/about.html", "<p>About us</p>\n"));
  std::printf("   wrote public/index.html and public/about.html into %s\n", live.c_str());

  HC_ASSIGN_OR_RETURN(auto rt, DemoRuntime(dir));
  HC_ASSIGN_OR_RETURN(uint16_t port, rt->PickPort());
  std::string rflags = "--state-dir " + dir + "/runtime";
  Step("serve it: a static web app on that volume (" + rt->backend() + " runtime)",
       "hc local " + flags + " " + rflags + " run site --template static --port " +
           std::to_string(port));
  runtime::TemplateRequest req;
  req.template_name = "static";
  req.app_name = "site";
  req.volume_path = live;
  req.port = port;
  req.limits.memory_bytes = 64ull << 20;
  HC_ASSIGN_OR_RETURN(runtime::AppSpec spec, runtime::ApplyTemplate(req));
  HC_RETURN_IF_ERROR(rt->Start(spec));
  HC_RETURN_IF_ERROR(rt->WaitReady("site", 30000));
  ShowPage(port, "/index.html");

  Step("snapshot it", "hc volume " + flags + " snapshot site v1");
  HC_ASSIGN_OR_RETURN(auto s1, st.Snapshot("site", "v1", {}));
  std::printf("   v1: %llu files, id %s\n", static_cast<unsigned long long>(s1.file_count),
              s1.id.substr(0, 16).c_str());

  std::printf(
      "\n== the customer edits the site (changes index.html, deletes about.html, "
      "adds shop.html)\n");
  HC_RETURN_IF_ERROR(WriteText(live + "/public/index.html",
                               "<h1>Welcome to the sample shop</h1>\n<p>Now with a sale!</p>\n"));
  ::unlink((live + "/public/about.html").c_str());
  HC_RETURN_IF_ERROR(WriteText(live + "/public/shop.html", "<p>Buy things</p>\n"));

  ShowPage(port, "/index.html");

  Step("snapshot again, with the running site frozen for that moment (consistent)",
       "hc local " + rflags + " freeze site && hc volume " + flags +
           " snapshot site v2 && hc local " + rflags + " thaw site");
  HC_RETURN_IF_ERROR(rt->Freeze("site"));
  auto s2_or = st.Snapshot("site", "v2", {});
  HC_RETURN_IF_ERROR(rt->Thaw("site"));
  HC_ASSIGN_OR_RETURN(auto s2, std::move(s2_or));
  std::printf("   v2: %llu files, id %s\n", static_cast<unsigned long long>(s2.file_count),
              s2.id.substr(0, 16).c_str());

  Step("what changed between v1 and v2", "hc volume " + flags + " diff site v1 v2");
  HC_ASSIGN_OR_RETURN(auto diff, st.Diff("site", "v1", "v2"));
  for (const auto& e : diff) std::printf("   %s %s\n", DiffKindName(e.kind), e.path.c_str());

  Step("replicate: send v1 in full to a second volume",
       "hc volume " + flags + " send site v1 | hc volume " + flags + " receive site-replica");
  StringSink full;
  HC_RETURN_IF_ERROR(st.Send("site", std::nullopt, "v1", full));
  StringSource full_in(full.out);
  HC_ASSIGN_OR_RETURN(auto r1, st.Receive("site-replica", full_in, {}));
  std::printf("   full stream: %s\n", FormatBytes(r1.stream_bytes).c_str());

  Step("then only the changes v1 -> v2", "hc volume " + flags +
                                             " send site v2 --from v1 | hc volume " + flags +
                                             " receive site-replica");
  StringSink inc;
  HC_RETURN_IF_ERROR(st.Send("site", std::string("v1"), "v2", inc));
  StringSource inc_in(inc.out);
  HC_ASSIGN_OR_RETURN(auto r2, st.Receive("site-replica", inc_in, {}));
  std::printf("   incremental stream: %s; the replica now has v1 and v2 with the same ids\n",
              FormatBytes(r2.stream_bytes).c_str());

  Step("browse the replica's snapshot like a customer would",
       "hc volume " + flags + " cat site-replica v2 public/index.html");
  StringSink page;
  HC_RETURN_IF_ERROR(st.ReadFile("site-replica", "v2", "public/index.html", page));
  std::printf("%s", page.out.c_str());

  Step("oops: roll the site back to v1 (v2 is kept on a branch, nothing is lost)",
       "hc local " + rflags + " stop site && hc volume " + flags +
           " rollback site v1 --branch site-before-rollback && hc local " + rflags + " start site");
  HC_RETURN_IF_ERROR(rt->Stop("site"));
  HC_ASSIGN_OR_RETURN(auto rb, st.Rollback("site", "v1", {false, "site-before-rollback"}));
  HC_RETURN_IF_ERROR(rt->Restart("site"));
  HC_RETURN_IF_ERROR(rt->WaitReady("site", 30000));
  ShowPage(port, "/index.html");
  std::printf("   v2 lives on in volume '%s'\n", rb.branch.c_str());

  Step("verify every stored chunk", "hc volume " + flags + " verify");
  HC_ASSIGN_OR_RETURN(auto rep, st.Verify(""));
  std::printf("   checked %llu objects: %s\n", static_cast<unsigned long long>(rep.objects_checked),
              rep.ok() ? "no damage" : "DAMAGED");

  Step("all volumes", "hc volume " + flags + " list");
  HC_ASSIGN_OR_RETURN(auto vols, st.ListVolumes());
  for (const auto& v : vols) {
    HC_ASSIGN_OR_RETURN(auto snaps, st.ListSnapshots(v.name));
    std::printf("   %-22s %s  snapshots:", v.name.c_str(), v.read_only ? "ro" : "rw");
    for (const auto& s : snaps) std::printf(" %s", s.name.c_str());
    std::printf("\n");
  }
  std::printf(
      "\nDone. The site is still served at http://127.0.0.1:%u/ (hc local %s status).\n"
      "Try the commands above yourself (HC_STORE_ROOT=%s and HC_RUNTIME_DIR=%s/runtime save "
      "typing).\nStop the site and remove the demo with: hc demo clean\n",
      port, rflags.c_str(), root.c_str(), dir.c_str());
  return Status::Ok();
}

}  // namespace

void AddDemoCommand(CLI::App& app, int* exit_code) {
  auto* demo = app.add_subcommand("demo",
                                  "Run a short local demonstration: a website's volume, served "
                                  "by a container, snapshotted, diffed, replicated, rolled back");
  static std::string dir = DefaultDemoDir();
  demo->add_option("--dir", dir, "Where the demo keeps its files")->capture_default_str();
  auto* clean =
      demo->add_subcommand("clean", "Stop the demo's site and remove everything it created");
  clean->callback([exit_code] {
    Status s = StopDemoApps(dir);
    if (s.ok()) s = RemoveTree(dir);
    if (s.ok()) std::printf("removed %s\n", dir.c_str());
    *exit_code = s.ok() ? 0 : Fail(s);
  });
  demo->callback([exit_code, clean] {
    if (clean->parsed()) return;  // CLI11 also runs the parent's callback
    Status s = RunDemo(dir);
    *exit_code = s.ok() ? 0 : Fail(s);
  });
}

}  // namespace hc::cli
