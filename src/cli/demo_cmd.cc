// `hc demo`: a short, real walk through the storage engine on this machine.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "common/fs.h"

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

Status RunDemo(const std::string& dir) {
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

  Step("snapshot again", "hc volume " + flags + " snapshot site v2");
  HC_ASSIGN_OR_RETURN(auto s2, st.Snapshot("site", "v2", {}));
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
       "hc volume " + flags + " rollback site v1 --branch site-before-rollback");
  HC_ASSIGN_OR_RETURN(auto rb, st.Rollback("site", "v1", {false, "site-before-rollback"}));
  HC_ASSIGN_OR_RETURN(std::string index, ReadFileToString(live + "/public/index.html"));
  std::printf("   live index.html is again: %s", index.c_str());
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
      "\nDone. Try the commands above yourself (HC_STORE_ROOT=%s saves typing --root).\n"
      "Remove the demo with: hc demo clean\n",
      root.c_str());
  return Status::Ok();
}

}  // namespace

void AddDemoCommand(CLI::App& app, int* exit_code) {
  auto* demo = app.add_subcommand("demo",
                                  "Run a short local demonstration of volumes: create, "
                                  "snapshot, diff, send/receive, roll back");
  static std::string dir = DefaultDemoDir();
  demo->add_option("--dir", dir, "Where the demo keeps its files")->capture_default_str();
  demo->callback([exit_code] {
    Status s = RunDemo(dir);
    *exit_code = s.ok() ? 0 : Fail(s);
  });
  auto* clean = demo->add_subcommand("clean", "Remove everything the demo created");
  clean->callback([exit_code] {
    Status s = RemoveTree(dir);
    if (s.ok()) std::printf("removed %s\n", dir.c_str());
    *exit_code = s.ok() ? 0 : Fail(s);
  });
}

}  // namespace hc::cli
