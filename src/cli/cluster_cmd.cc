// `hc app ...` and `hc cluster status`: the cluster commands, through the
// REST API of any node (docs/api.md).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/api_client.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "common/fs.h"
#include "common/units.h"

namespace hc::cli {
namespace {

using json = nlohmann::json;

Result<json> CallJson(const ApiFlags& f, const std::string& method, const std::string& path,
                      const std::string& body = "") {
  HC_ASSIGN_OR_RETURN(auto text, CallApi(f, method, path, body));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return Internal("the API answered something that is not JSON");
  return j;
}

std::string Str(const json& j, const char* k) {
  auto it = j.find(k);
  if (it == j.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::string Join(const json& arr, const char* sep = ",") {
  std::string out;
  if (!arr.is_array()) return out;
  for (const auto& e : arr) {
    if (!out.empty()) out += sep;
    out += e.is_string() ? e.get<std::string>() : e.dump();
  }
  return out;
}

// Prints rows as aligned columns.
void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w;
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size(); i++) {
      if (w.size() <= i) w.push_back(0);
      w[i] = std::max(w[i], r[i].size());
    }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); i++) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(w[i] - r[i].size() + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
}

// "n1@127.0.0.11:24873" for the primary, from status.
std::string WhereRuns(const json& app, const std::map<std::string, std::string>& addr) {
  const json& p = app["placement"];
  if (!p.is_object()) return "-";
  std::string primary = Str(p, "primary");
  std::string where = primary;
  for (const auto& s : app["status"])
    if (Str(s, "node") == primary && s.value("port", 0) > 0) {
      auto a = addr.find(primary);
      where += "@" + (a != addr.end() ? a->second : std::string("?")) + ":" +
               std::to_string(s.value("port", 0));
    }
  return where;
}

std::map<std::string, std::string> NodeAddresses(const ApiFlags& f) {
  std::map<std::string, std::string> m;
  auto nodes = CallJson(f, "GET", "/v1/nodes");
  if (nodes.ok())
    for (const auto& n : (*nodes)["nodes"]) m[Str(n, "id")] = Str(n, "address");
  return m;
}

std::string Seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, s < 10 ? "%.1f s" : "%.0f s", s);
  return buf;
}

// The replication part of `hc app show`: one row per replica, as the
// primary sees it, and what was kept when a copy diverged.
void PrintReplication(const json& r, const json& app) {
  std::printf("\nreplication (from %s, the %s):\n", Str(r, "node").c_str(),
              Str(r, "role").empty() ? "node asked" : Str(r, "role").c_str());
  if (r.contains("newest_snapshot")) {
    const json& n = r["newest_snapshot"];
    std::printf("  newest snapshot: %s (id %.16s…)\n", Str(n, "name").c_str(),
                Str(n, "id").c_str());
  }
  if (r.contains("primary_error")) std::printf("  %s\n", Str(r, "primary_error").c_str());
  if (r.contains("replicas") && !r["replicas"].empty()) {
    std::vector<std::vector<std::string>> rows = {
        {"REPLICA", "STATE", "NEWEST", "LAG", "LAG-BYTES", "RPO", "LAST ERROR"}};
    for (const auto& x : r["replicas"]) {
      std::string state = Str(x, "state");
      if (x.contains("transfer")) {
        const json& t = x["transfer"];
        uint64_t done = t.value("progress_bytes", uint64_t{0}),
                 total = t.value("expected_bytes", uint64_t{0});
        state += std::string(t.value("full", false) ? " (initial sync " : " (") +
                 FormatBytes(done) + (total ? " of ~" + FormatBytes(total) : "") + ")";
      }
      std::string newest = Str(x, "newest_snapshot");
      rows.push_back({Str(x, "replica"), state, newest.empty() ? "-" : newest.substr(0, 12),
                      Seconds(x.value("lag_seconds", 0.0)),
                      FormatBytes(x.value("lag_bytes", uint64_t{0})),
                      x.contains("rpo_seconds") ? Seconds(x["rpo_seconds"].get<double>()) : "-",
                      Str(x, "last_error")});
    }
    PrintTable(rows);
  } else if (app.value("replicas", 0) > 0 && Str(r, "role") == "primary") {
    std::printf("  no replica placed yet\n");
  }
  if (r.contains("diverged_branches") && !r["diverged_branches"].empty())
    std::printf("  copies kept as volumes (diverged or damaged): %s\n",
                Join(r["diverged_branches"], ", ").c_str());
  if (!Str(r, "last_error").empty())
    std::printf("  last problem: %s\n", Str(r, "last_error").c_str());
  if (r.contains("last_scrub")) {
    const json& s = r["last_scrub"];
    std::printf("  last scrub on %s: %s, %s checked, %s repaired\n", Str(s, "node").c_str(),
                s.value("ok", false) ? "intact" : "DAMAGE LEFT",
                FormatBytes(s.value("bytes_checked", uint64_t{0})).c_str(),
                Str(s, "repaired").c_str());
  }
  if (r.contains("asked_node")) {
    const json& h = r["asked_node"];
    if (!h["diverged_branches"].empty())
      std::printf("  copies kept on %s: %s\n", Str(h, "node").c_str(),
                  Join(h["diverged_branches"], ", ").c_str());
  }
}

void PrintAppsTable(const json& apps, const std::map<std::string, std::string>& addr) {
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "TEMPLATE", "STATE", "PRIMARY", "REPLICAS", "EPOCH", "DOMAINS"}};
  for (const auto& a : apps) {
    const json& p = a["placement"];
    rows.push_back({Str(a, "name"), Str(a, "template"), Str(a, "summary"), WhereRuns(a, addr),
                    p.is_object() ? Join(p["replicas"]) : "-",
                    p.is_object() ? Str(p, "epoch") : "-", Join(a["domains"])});
  }
  PrintTable(rows);
}

// "90s", "30m", "1h", "2d" or plain seconds.
Result<int64_t> ParseDuration(const std::string& s) {
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  std::string unit = end ? std::string(end) : "";
  int64_t mul = unit.empty() || unit == "s" ? 1
                : unit == "m"               ? 60
                : unit == "h"               ? 3600
                : unit == "d"               ? 86400
                                            : 0;
  if (s.empty() || end == s.c_str() || v <= 0 || mul == 0 || v > 10 * 365LL * 86400)
    return InvalidArgument("'" + s + "' is not a duration like 90s, 30m, 1h or 2d");
  return static_cast<int64_t>(v) * mul;
}

void PrintJson(const json& j) {
  std::printf("%s\n", j.dump(2).c_str());
}

int Run(int* exit_code, const std::function<Status()>& fn) {
  Status s = fn();
  *exit_code = s.ok() ? 0 : Fail(s);
  return *exit_code;
}

}  // namespace

void AddClusterCommands(CLI::App& root, int* exit_code) {
  // ---------------------------------------------------------------- hc app
  auto* app = root.add_subcommand(
      "app", "Apps on the cluster: create, list, show, delete, hold, release, cert, scrub");
  app->require_subcommand(1);

  {
    auto* c = app->add_subcommand("create", "Create an app; the cluster places and starts it");
    static ApiFlags f;
    static std::string name, tmpl, command, memory = "256M";
    static std::vector<std::string> domains, aliases, env;
    static std::string protocol;
    static std::vector<uint16_t> tcp_ports;
    static int replicas = 1, timeout_s = 120;
    static uint32_t snapshot_interval = 0;
    static std::string retention;
    static double cpus = 1.0;
    static uint32_t pids = 512;
    static bool no_wait = false;
    c->add_option("NAME", name, "App name (a-z, 0-9, '.', '_', '-')")->required();
    c->add_option("-t,--template", tmpl, "static, command, postgres or mariadb")->required();
    c->add_option("-c,--command", command, "Command line for --template command");
    c->add_option("-d,--domain", domains,
                  "Domain served by the app (repeatable; *.example.com allowed)");
    c->add_option("--alias", aliases,
                  "Another name for the app, answered in DNS as a CNAME to its first "
                  "domain (repeatable)");
    c->add_option("--protocol", protocol,
                  "What the app's port speaks: http (default; postgres and mariadb apps: "
                  "postgres, mysql), https (the app terminates TLS: passed through by SNI), "
                  "imap, pop3 (routed by the login's domain), tcp");
    c->add_option("--tcp-port", tcp_ports,
                  "A port every node relays to the app as it is (repeatable), e.g. 3306");
    c->add_option("-r,--replicas", replicas, "Copies on other nodes (0-5)")->capture_default_str();
    c->add_option("--snapshot-interval", snapshot_interval,
                  "Seconds between checks for changes (snapshot + push to replicas), 1-86400; "
                  "default: the cluster's (30)");
    c->add_option("--retention", retention,
                  "Snapshots to keep, e.g. \"1h: keep all | 24h: 1 per hour | 30d: 1 per day\"; "
                  "default: the cluster's");
    c->add_option("--memory", memory, "Memory limit, e.g. 256M or 1G")->capture_default_str();
    c->add_option("--cpus", cpus, "CPU limit in cores, e.g. 0.5")->capture_default_str();
    c->add_option("--pids", pids, "Process limit")->capture_default_str();
    c->add_option("-e,--env", env, "Extra environment, NAME=value (repeatable)");
    c->add_flag("--no-wait", no_wait, "Return once the cluster has accepted the app");
    c->add_option("--timeout", timeout_s, "Seconds to wait for it to run")->capture_default_str();
    f.AddTo(c, true);
    c->callback([exit_code] {
      Run(exit_code, [&]() -> Status {
        json body = {{"name", name},
                     {"template", tmpl},
                     {"domains", domains},
                     {"env", env},
                     {"replicas", replicas}};
        if (!command.empty()) body["command"] = command;
        if (!aliases.empty()) body["aliases"] = aliases;
        if (!protocol.empty()) body["protocol"] = protocol;
        if (!tcp_ports.empty()) body["tcp_ports"] = tcp_ports;
        if (snapshot_interval != 0) body["snapshot_interval_seconds"] = snapshot_interval;
        if (!retention.empty()) body["retention"] = retention;
        HC_ASSIGN_OR_RETURN(uint64_t mem, ParseSize(memory));
        if (cpus <= 0 || cpus > 256)
          return InvalidArgument("--cpus must be more than 0 and at most 256");
        body["limits"] = {{"memory_bytes", mem},
                          {"cpu_millis", static_cast<uint32_t>(cpus * 1000 + 0.5)},
                          {"pids", pids}};
        HC_ASSIGN_OR_RETURN(json created, CallJson(f, "POST", "/v1/apps", body.dump()));
        if (!f.json)
          std::fprintf(stderr, "app '%s' created; the cluster is placing it...\n", name.c_str());
        json last = created;
        if (!no_wait) {
          auto until = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
          std::string shown;
          while (true) {
            HC_ASSIGN_OR_RETURN(last, CallJson(f, "GET", "/v1/apps/" + name));
            std::string summary = Str(last, "summary");
            if (summary != shown && !f.json) {
              std::fprintf(stderr, "  %s\n", summary.c_str());
              shown = summary;
            }
            if (summary == "running") break;
            if (summary == "error" || summary == "crash-looping") {
              std::string msg;
              for (const auto& s : last["status"])
                if (!Str(s, "message").empty()) msg = Str(s, "message");
              return Internal("app '" + name + "' does not start: " + msg + " (hc app show " +
                              name + " has details)");
            }
            if (std::chrono::steady_clock::now() > until)
              return Unavailable("app '" + name + "' is not running after " +
                                 std::to_string(timeout_s) + " s (state: " + summary +
                                 "); it stays created, see hc app show " + name);
            std::this_thread::sleep_for(std::chrono::milliseconds(300));
          }
        }
        if (f.json) {
          PrintJson(last);
        } else {
          auto addr = NodeAddresses(f);
          std::printf("app '%s' is %s on %s\n", name.c_str(), Str(last, "summary").c_str(),
                      WhereRuns(last, addr).c_str());
        }
        return Status::Ok();
      });
    });
  }
  {
    auto* c = app->add_subcommand("list", "List apps: state, where they run, domains");
    static ApiFlags f;
    f.AddTo(c, true);
    c->callback([exit_code] {
      Run(exit_code, [&]() -> Status {
        HC_ASSIGN_OR_RETURN(json j, CallJson(f, "GET", "/v1/apps"));
        if (f.json) {
          PrintJson(j);
          return Status::Ok();
        }
        if (j["apps"].empty()) {
          std::printf("no apps yet (hc app create NAME --template static)\n");
          return Status::Ok();
        }
        PrintAppsTable(j["apps"], NodeAddresses(f));
        return Status::Ok();
      });
    });
  }
  {
    auto* c = app->add_subcommand("show", "Show one app: spec, placement, status on each node");
    static ApiFlags f;
    static std::string name;
    c->add_option("NAME", name, "App name")->required();
    f.AddTo(c, true);
    c->callback([exit_code] {
      Run(exit_code, [&]() -> Status {
        HC_ASSIGN_OR_RETURN(json a, CallJson(f, "GET", "/v1/apps/" + name));
        // Replication figures come from the app's primary (asked by the API node).
        auto rep = CallJson(f, "GET", "/v1/apps/" + name + "/replication");
        if (f.json) {
          if (rep.ok()) a["replication"] = *rep;
          PrintJson(a);
          return Status::Ok();
        }
        auto addr = NodeAddresses(f);
        const json& l = a["limits"];
        std::printf("app:       %s (%s)\n", Str(a, "name").c_str(), Str(a, "template").c_str());
        if (!Str(a, "command").empty()) std::printf("command:   %s\n", Str(a, "command").c_str());
        std::printf("state:     %s\n", Str(a, "summary").c_str());
        std::printf("domains:   %s\n",
                    a["domains"].empty() ? "-" : Join(a["domains"], ", ").c_str());
        if (a.contains("aliases") && !a["aliases"].empty())
          std::printf("aliases:   %s\n", Join(a["aliases"], ", ").c_str());
        if (!Str(a, "protocol").empty()) std::printf("protocol:  %s\n", Str(a, "protocol").c_str());
        if (a.contains("tcp_ports") && !a["tcp_ports"].empty()) {
          std::string ports;
          for (const auto& p : a["tcp_ports"]) ports += (ports.empty() ? "" : ", ") + p.dump();
          std::printf("tcp ports: %s\n", ports.c_str());
        }
        std::printf("limits:    memory %s, cpu %.2f cores, %s processes\n",
                    FormatBytes(l.value("memory_bytes", uint64_t{0})).c_str(),
                    l.value("cpu_millis", 0) / 1000.0, Str(l, "pids").c_str());
        std::printf("replicas:  %s wanted\n", Str(a, "replicas").c_str());
        std::printf("snapshots: every %s s if changed; keep %s\n",
                    a.value("snapshot_interval_seconds", 0) == 0
                        ? "30 (cluster default)"
                        : Str(a, "snapshot_interval_seconds").c_str(),
                    Str(a, "retention").empty() ? "the cluster default"
                                                : ("'" + Str(a, "retention") + "'").c_str());
        const json& p = a["placement"];
        if (p.is_object()) {
          std::printf("placement: primary %s, replicas %s, epoch %s (%s)\n",
                      Str(p, "primary").c_str(),
                      p["replicas"].empty() ? "-" : Join(p["replicas"], ", ").c_str(),
                      Str(p, "epoch").c_str(), Str(p, "state").c_str());
        } else {
          std::printf("placement: not yet placed (waiting for the leader or for nodes)\n");
        }
        std::vector<std::vector<std::string>> rows = {{"NODE", "ROLE", "STATE", "READY", "ADDRESS",
                                                       "MEMORY", "CPU-S", "RESTARTS", "MESSAGE"}};
        for (const auto& s : a["status"]) {
          std::string node = Str(s, "node");
          std::string where = "-";
          if (s.value("port", 0) > 0)
            where = (addr.count(node) ? addr[node] : "?") + ":" + Str(s, "port");
          char cpu[32];
          std::snprintf(cpu, sizeof cpu, "%.2f", s.value("cpu_seconds", 0.0));
          rows.push_back({node, Str(s, "role"), Str(s, "state"),
                          s.value("ready", false) ? "yes" : "no", where,
                          FormatBytes(s.value("memory_bytes", uint64_t{0})), cpu,
                          Str(s, "restarts"), Str(s, "message")});
        }
        std::printf("\n");
        PrintTable(rows);
        if (rep.ok())
          PrintReplication(*rep, a);
        else
          std::printf("\nreplication: unknown (%s)\n", rep.status().message().c_str());
        return Status::Ok();
      });
    });
  }
  {
    auto* c = app->add_subcommand(
        "scrub",
        "Re-read and check the app's data on every node now; repair damage from a "
        "healthy copy on another node");
    static ApiFlags f;
    static std::string name;
    c->add_option("NAME", name, "App name")->required();
    f.AddTo(c, true);
    c->callback([exit_code] {
      Run(exit_code, [&]() -> Status {
        std::fprintf(stderr, "scrubbing %s on every node that holds it...\n", name.c_str());
        HC_ASSIGN_OR_RETURN(json j, CallJson(f, "POST", "/v1/apps/" + name + "/scrub"));
        if (f.json) {
          PrintJson(j);
          return Status::Ok();
        }
        bool all_ok = true;
        std::vector<std::vector<std::string>> rows = {
            {"NODE", "RESULT", "CHECKED", "REPAIRED", "PROBLEMS LEFT"}};
        for (const auto& n : j["nodes"]) {
          bool ok = n.value("ok", false);
          all_ok = all_ok && ok;
          std::string result =
              ok ? (n.value("repaired", 0) > 0 ? "repaired" : "intact")
                 : (Str(n, "error").empty() ? "DAMAGED" : "error: " + Str(n, "error"));
          std::string left = n.contains("problems") && !n["problems"].empty()
                                 ? std::to_string(n["problems"].size()) + ": " +
                                       n["problems"][0].get<std::string>()
                                 : "-";
          rows.push_back({Str(n, "node"), result,
                          FormatBytes(n.value("bytes_checked", uint64_t{0})),
                          Str(n, "repaired").empty() ? "0" : Str(n, "repaired"), left});
        }
        PrintTable(rows);
        if (!all_ok)
          return Corrupt("damage is left on some node (see above and `hc events --app " + name +
                         "`)");
        return Status::Ok();
      });
    });
  }
  {
    auto* c = app->add_subcommand(
        "move",
        "Live-migrate an app to another node: copy while it runs, hold requests, switch, "
        "release (no request fails)");
    static ApiFlags f;
    static std::string name, node;
    static bool detach = false;
    c->add_option("NAME", name, "App name")->required();
    c->add_option("NODE", node, "Target node id (see hc cluster status)")->required();
    c->add_flag("-d,--detach", detach,
                "Return once the move is requested (see hc app move-status)");
    f.AddTo(c, true);
    c->callback([exit_code] {
      Run(exit_code, [&]() -> Status {
        HC_ASSIGN_OR_RETURN(
            json j, CallJson(f, "POST", "/v1/apps/" + name + "/move", json{{"node", node}}.dump()));
        if (detach) {
          if (f.json)
            PrintJson(j);
          else
            std::printf("move of %s to %s requested (hc app move-status %s)\n", name.c_str(),
                        node.c_str(), name.c_str());
          return Status::Ok();
        }
        int64_t requested = j.value("requested_ms", int64_t{0});
        std::string last;
        auto deadline = std::chrono::steady_clock::now() + std::chrono::hours(2);
        while (std::chrono::steady_clock::now() < deadline) {
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
          auto m = CallJson(f, "GET", "/v1/apps/" + name + "/move");
          if (!m.ok()) continue;  // a node restarting: ask again
          if (m->value("requested_ms", int64_t{0}) != requested) continue;
          std::string line = Str(*m, "state") + ": " + Str(*m, "message");
          if (line != last && !f.json) std::fprintf(stderr, "  %s\n", line.c_str());
          last = line;
          std::string state = Str(*m, "state");
          if (state == "done") {
            if (f.json) PrintJson(*m);
            return Status::Ok();
          }
          if (state == "failed") {
            if (f.json) PrintJson(*m);
            return Unavailable(Str(*m, "message"));
          }
        }
        return Unavailable("the move did not end within 2 hours; see hc app move-status " + name);
      });
    });
  }
  {
    auto* c = app->add_subcommand("move-status", "The app's last move: its steps and outcome");
    static ApiFlags f;
    static std::string name;
    c->add_option("NAME", name, "App name")->required();
    f.AddTo(c, true);
    c->callback([exit_code] {
      Run(exit_code, [&]() -> Status {
        HC_ASSIGN_OR_RETURN(json m, CallJson(f, "GET", "/v1/apps/" + name + "/move"));
        if (f.json) {
          PrintJson(m);
          return Status::Ok();
        }
        std::printf("%s: %s -> %s (%s, asked by %s)\n%s: %s\n", name.c_str(),
                    Str(m, "source").empty() ? "?" : Str(m, "source").c_str(),
                    Str(m, "target").c_str(), Str(m, "reason").c_str(), Str(m, "by").c_str(),
                    Str(m, "state").c_str(), Str(m, "message").c_str());
        return Status::Ok();
      });
    });
  }
  {
    auto* c = app->add_subcommand("delete", "Delete an app and its data on every node");
    static ApiFlags f;
    static std::string name;
    static bool yes = false;
    c->add_option("NAME", name, "App name")->required();
    c->add_flag("-y,--yes", yes, "Do not ask; needed when not on a terminal");
    f.AddTo(c, false);
    c->callback([exit_code] {
      Run(exit_code, [&]() -> Status {
        if (!yes) {
          if (!isatty(0))
            return InvalidArgument("deleting '" + name +
                                   "' destroys its data on every node; add --yes to confirm");
          std::fprintf(stderr,
                       "Delete app '%s' and destroy its data (all snapshots) on every node? [y/N] ",
                       name.c_str());
          std::string answer;
          std::getline(std::cin, answer);
          if (answer != "y" && answer != "Y" && answer != "yes") {
            std::fprintf(stderr, "nothing deleted\n");
            return Status::Ok();
          }
        }
        HC_ASSIGN_OR_RETURN(json j, CallJson(f, "DELETE", "/v1/apps/" + name));
        std::printf("app '%s' deleted; nodes stop it and remove its data\n", name.c_str());
        return Status::Ok();
      });
    });
  }

  {
    auto* c = app->add_subcommand(
        "hold", "Queue the app's new requests at every proxy (before moving it by hand)");
    static ApiFlags f;
    static std::string name;
    static int seconds = 30;
    c->add_option("NAME", name, "App name")->required();
    c->add_option("--seconds", seconds,
                  "Release by itself after this long (1-300); requests waiting longer than the "
                  "proxy's hold timeout get 503 with Retry-After")
        ->capture_default_str();
    f.AddTo(c, false);
    c->callback([exit_code] {
      Run(exit_code, [&]() -> Status {
        HC_ASSIGN_OR_RETURN(json j, CallJson(f, "POST", "/v1/apps/" + name + "/hold",
                                             json{{"seconds", seconds}}.dump()));
        std::printf("app '%s' held for at most %d s; hc app release %s ends it\n", name.c_str(),
                    seconds, name.c_str());
        return Status::Ok();
      });
    });
  }
  {
    auto* c = app->add_subcommand("release", "End a hold: queued requests go to the app");
    static ApiFlags f;
    static std::string name;
    c->add_option("NAME", name, "App name")->required();
    f.AddTo(c, false);
    c->callback([exit_code] {
      Run(exit_code, [&]() -> Status {
        HC_ASSIGN_OR_RETURN(json j, CallJson(f, "DELETE", "/v1/apps/" + name + "/hold"));
        std::printf("app '%s' released\n", name.c_str());
        return Status::Ok();
      });
    });
  }
  {
    auto* c = app->add_subcommand(
        "cert", "Set (or --delete) the TLS certificate the proxies present for the app's domains");
    static ApiFlags f;
    static std::string name, cert_file, key_file;
    static bool del = false;
    c->add_option("NAME", name, "App name")->required();
    c->add_option("--cert", cert_file, "PEM file: the certificate, then its chain");
    c->add_option("--key", key_file, "PEM file: its private key");
    c->add_flag("--delete", del, "Remove the app's certificate (the default one is used)");
    f.AddTo(c, false);
    c->callback([exit_code] {
      Run(exit_code, [&]() -> Status {
        if (del) {
          HC_ASSIGN_OR_RETURN(json j, CallJson(f, "DELETE", "/v1/apps/" + name + "/certificate"));
          std::printf("certificate of app '%s' removed\n", name.c_str());
          return Status::Ok();
        }
        if (cert_file.empty() || key_file.empty())
          return InvalidArgument("give --cert FILE and --key FILE (PEM), or --delete");
        HC_ASSIGN_OR_RETURN(std::string cert, ReadFileToString(cert_file));
        HC_ASSIGN_OR_RETURN(std::string key, ReadFileToString(key_file));
        HC_ASSIGN_OR_RETURN(json j, CallJson(f, "PUT", "/v1/apps/" + name + "/certificate",
                                             json{{"cert_pem", cert}, {"key_pem", key}}.dump()));
        std::printf("certificate of app '%s' stored; every node's proxy uses it in a moment\n",
                    name.c_str());
        return Status::Ok();
      });
    });
  }

  // ---------------------------------------------------------------- hc node
  auto* nd = root.add_subcommand("node", "Nodes: drain for maintenance, take back into service");
  nd->require_subcommand(1);
  {
    auto* c = nd->add_subcommand(
        "drain",
        "Move every app running on a node to other nodes (live migrations, a few at a time); "
        "the node takes no new apps until undrained");
    static ApiFlags f;
    static std::string node;
    static bool no_wait = false;
    c->add_option("NODE", node, "Node id (see hc cluster status)")->required();
    c->add_flag("--no-wait", no_wait, "Return at once; hc cluster status shows the progress");
    f.AddTo(c, true);
    c->callback([exit_code] {
      Run(exit_code, [&]() -> Status {
        HC_ASSIGN_OR_RETURN(json j, CallJson(f, "POST", "/v1/nodes/" + node + "/drain"));
        if (no_wait || f.json) {
          if (f.json)
            PrintJson(j);
          else
            std::printf("node %s drained; its apps are moving away\n", node.c_str());
          return Status::Ok();
        }
        int64_t last = -1;
        auto deadline = std::chrono::steady_clock::now() + std::chrono::hours(6);
        while (std::chrono::steady_clock::now() < deadline) {
          auto cl = CallJson(f, "GET", "/v1/cluster");
          if (cl.ok()) {
            int64_t left = 0;
            for (const auto& a : (*cl)["apps"]) {
              const json& p = a["placement"];
              if (p.is_object() && Str(p, "primary") == node) ++left;
            }
            if (left != last)
              std::fprintf(stderr, "  %lld app(s) still running on %s\n",
                           static_cast<long long>(left), node.c_str());
            last = left;
            if (left == 0) {
              std::printf(
                  "node %s is drained: no app runs there (hc node undrain %s takes it "
                  "back)\n",
                  node.c_str(), node.c_str());
              return Status::Ok();
            }
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(500));
        }
        return Unavailable("apps are still on " + node + " after 6 hours; see hc events");
      });
    });
  }
  {
    auto* c = nd->add_subcommand("undrain", "Take a drained node back into service");
    static ApiFlags f;
    static std::string node;
    c->add_option("NODE", node, "Node id")->required();
    f.AddTo(c, true);
    c->callback([exit_code] {
      Run(exit_code, [&]() -> Status {
        HC_ASSIGN_OR_RETURN(json j, CallJson(f, "POST", "/v1/nodes/" + node + "/undrain"));
        if (f.json)
          PrintJson(j);
        else
          std::printf("node %s takes apps again\n", node.c_str());
        return Status::Ok();
      });
    });
  }

  // ---------------------------------------------------------------- hc cluster
  auto* cl = root.add_subcommand("cluster", "The cluster: nodes, leader, apps");
  cl->require_subcommand(1);
  {
    auto* c = cl->add_subcommand("status", "Show nodes, the leader, and where every app runs");
    static ApiFlags f;
    f.AddTo(c, true);
    c->callback([exit_code] {
      Run(exit_code, [&]() -> Status {
        HC_ASSIGN_OR_RETURN(json j, CallJson(f, "GET", "/v1/cluster"));
        if (f.json) {
          PrintJson(j);
          return Status::Ok();
        }
        std::map<std::string, std::string> addr;
        std::vector<std::vector<std::string>> rows = {
            {"NODE", "NAME", "ADDRESS", "DC", "ROLE", "PRIMARIES", "REPLICAS", "MEMORY", "CPUS"}};
        for (const auto& n : j["nodes"]) {
          addr[Str(n, "id")] = Str(n, "address");
          char cpus[32];
          std::snprintf(cpus, sizeof cpus, "%.1f", n.value("cpu_millis", 0) / 1000.0);
          rows.push_back({Str(n, "id"), Str(n, "name"),
                          Str(n, "address") + ":" + Str(n, "api_port"), Str(n, "datacenter"),
                          std::string(n.value("leader", false) ? "leader" : "member") +
                              (n.value("drained", false) ? ", drained" : ""),
                          Str(n, "primaries"), Str(n, "replicas"),
                          FormatBytes(n.value("memory_bytes", uint64_t{0})), cpus});
        }
        std::printf("%zu node(s), leader: %s\n", j["nodes"].size(),
                    Str(j, "leader").empty() ? "(none yet)" : Str(j, "leader").c_str());
        if (j.contains("ca") && j["ca"].is_object())
          std::printf("cluster CA: %s, SHA-256 %s\n", Str(j["ca"], "common_name").c_str(),
                      Str(j["ca"], "fingerprint_sha256").c_str());
        std::printf("\n");
        PrintTable(rows);
        std::printf("\n");
        if (j["apps"].empty()) {
          std::printf("no apps yet (hc app create NAME --template static)\n");
        } else {
          PrintAppsTable(j["apps"], addr);
        }
        return Status::Ok();
      });
    });
  }

  {
    auto* c = cl->add_subcommand(
        "join-token",
        "Issue a token that admits new nodes: start each with `hcd --join TOKEN`. A token can "
        "admit several nodes until it expires (--ttl); whoever holds it can join a node, so "
        "pass it on privately. Needs the admin API token.");
    static ApiFlags f;
    static std::string ttl = "1h";
    c->add_option("--ttl", ttl, "How long the token is valid: 90s, 30m, 1h, 2d (1m to 7d)")
        ->capture_default_str();
    f.AddTo(c, true);
    c->callback([exit_code] {
      Run(exit_code, [&]() -> Status {
        HC_ASSIGN_OR_RETURN(int64_t seconds, ParseDuration(ttl));
        json body = {{"ttl_seconds", seconds}};
        HC_ASSIGN_OR_RETURN(json j, CallJson(f, "POST", "/v1/cluster/join-tokens", body.dump()));
        if (f.json) {
          PrintJson(j);
          return Status::Ok();
        }
        std::printf("%s\n", Str(j, "token").c_str());
        std::fprintf(stderr,
                     "valid for %s and for any number of nodes; on each new node run: hcd --join "
                     "<token above> (or join_token_file in hcd.yaml)\n",
                     ttl.c_str());
        return Status::Ok();
      });
    });
  }

  // -------------------------------------------------------------------- hc dns
  // ------------------------------------------------------------- hc events
  {
    auto* c = root.add_subcommand(
        "events", "What happened: repairs, divergences, moves, failovers (newest last)");
    static ApiFlags f;
    static std::string app_name;
    static int limit = 50;
    c->add_option("--app", app_name, "Only events of this app");
    c->add_option("-n,--limit", limit, "How many of the newest to show (0 = all kept)")
        ->capture_default_str();
    f.AddTo(c, true);
    c->callback([exit_code] {
      Run(exit_code, [&]() -> Status {
        if (limit < 0) return InvalidArgument("--limit must be 0 (all) or more");
        std::string q = "/v1/events?limit=" + std::to_string(limit);
        if (!app_name.empty()) q += "&app=" + app_name;
        HC_ASSIGN_OR_RETURN(json j, CallJson(f, "GET", q));
        if (f.json) {
          PrintJson(j);
          return Status::Ok();
        }
        if (j["events"].empty()) {
          std::printf("no events%s\n", app_name.empty() ? "" : (" for " + app_name).c_str());
          return Status::Ok();
        }
        std::vector<std::vector<std::string>> rows = {
            {"TIME (UTC)", "NODE", "APP", "KIND", "WHAT"}};
        for (const auto& e : j["events"]) {
          time_t t = static_cast<time_t>(e.value("time_ms", int64_t{0}) / 1000);
          struct tm tm;
          gmtime_r(&t, &tm);
          char when[32];
          std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
          rows.push_back({when, Str(e, "node"), Str(e, "app").empty() ? "-" : Str(e, "app"),
                          Str(e, "kind"), Str(e, "message")});
        }
        PrintTable(rows);
        return Status::Ok();
      });
    });
  }

  auto* dn = root.add_subcommand("dns", "The cluster's authoritative DNS");
  dn->require_subcommand(1);
  {
    auto* c = dn->add_subcommand(
        "show", "Print the zones as the node answers them (zone-file syntax; NSD/Knot load it)");
    static ApiFlags f;
    static std::string zone;
    c->add_option("--zone", zone, "Only this zone (e.g. hosting.example.net)");
    f.AddTo(c, true);
    c->callback([exit_code] {
      Run(exit_code, [&]() -> Status {
        HC_ASSIGN_OR_RETURN(json j, CallJson(f, "GET", "/v1/dns"));
        if (f.json) {
          PrintJson(j);
          return Status::Ok();
        }
        if (!j.value("enabled", false))
          return InvalidArgument("DNS is off on node " + Str(j, "answered_by") +
                                 ": set dns_zones in its hcd.yaml (hcd --help)");
        if (j["zones"].empty())
          return Unavailable("node " + Str(j, "answered_by") +
                             " has not read the cluster state yet; try again in a moment");
        std::string z = zone;
        if (!z.empty() && z.back() == '.') z.pop_back();
        bool found = false;
        for (const auto& zj : j["zones"]) {
          if (!z.empty() && Str(zj, "apex") != z) continue;
          if (found) std::printf("\n");
          std::fputs(Str(zj, "text").c_str(), stdout);
          found = true;
        }
        if (!found) {
          json names = json::array();
          for (const auto& zj : j["zones"]) names.push_back(Str(zj, "apex"));
          return NotFound("zone '" + z + "' is not served here (zones: " + Join(names, ", ") + ")");
        }
        return Status::Ok();
      });
    });
  }
}

}  // namespace hc::cli