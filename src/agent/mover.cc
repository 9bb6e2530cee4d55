#include "agent/mover.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/log.h"

namespace hc::agent {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

int64_t WallMs() {
  return std::chrono::duration_cast<milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Mib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

class Move {
 public:
  Move(const MoveEnv& env, cluster::MoveRecord m) : env_(env), m_(std::move(m)) {}

  cluster::MoveRecord Run() {
    if (m_.state != "pending") return Recover();
    // A leader that steps down leaves the move as it is: the next one
    // finishes or undoes it from the record (Recover).
    Status s = Prepare();
    if (s.ok()) s = PreCopy();
    if (!s.ok()) return Cancelled() ? m_ : Fail(s.message());
    PrepareTarget();
    s = HandOff();
    if (!s.ok()) return Cancelled() ? m_ : Undo(s.message());
    s = Switch();
    if (!s.ok()) return Cancelled() ? m_ : Undo(s.message());
    return FinishStart();
  }

 private:
  // Progress for people (`hc app move` prints it) and for a new leader.
  void Step(const std::string& state, const std::string& message) {
    m_.state = state;
    m_.message = message;
    m_.updated_ms = WallMs();
    Status s = env_.cs->UpdateMove(m_, env_.guard);
    if (!s.ok())
      LogWarn("move %s: cannot record progress: %s", m_.app.c_str(), s.ToString().c_str());
    LogInfo("move %s -> %s: %s: %s", m_.app.c_str(), m_.target.c_str(), state.c_str(),
            message.c_str());
  }

  cluster::MoveRecord End(const std::string& state, const std::string& message) {
    // The outcome must be recorded (etcd may be restarting): retry for a
    // while; if it still cannot be written, the record stays unfinished and
    // the leader runs the move again, which finishes or undoes it (Recover).
    std::string was = m_.state;
    m_.state = state;
    m_.message = message;
    Status s = Status::Ok();
    auto until = Clock::now() + std::chrono::seconds(60);
    for (;;) {
      m_.updated_ms = WallMs();
      s = env_.cs->UpdateMove(m_, env_.guard);
      if (s.ok() || Cancelled() || Clock::now() >= until) break;
      std::this_thread::sleep_for(milliseconds(250));
    }
    LogInfo("move %s -> %s: %s: %s", m_.app.c_str(), m_.target.c_str(), state.c_str(),
            message.c_str());
    if (!s.ok()) {
      LogWarn("move %s: outcome not recorded (%s); it will be taken up again", m_.app.c_str(),
              s.ToString().c_str());
      m_.state = was;
      return m_;
    }
    cluster::Event e{WallMs(), "", m_.app, "move", message};
    if (Status s = env_.cs->RecordEvent(e); !s.ok())
      LogWarn("move %s: event not recorded: %s", m_.app.c_str(), s.ToString().c_str());
    return m_;
  }

  cluster::MoveRecord Fail(const std::string& why) {
    return End("failed", "move to '" + m_.target + "' failed: " + why +
                             (m_.source.empty() ? "" : "; the app stays on '" + m_.source + "'"));
  }

  bool Cancelled() const { return env_.cancelled && env_.cancelled(); }

  Status Reload() {
    HC_ASSIGN_OR_RETURN(view_, env_.cs->LoadView());
    auto p = view_.placements.find(m_.app);
    if (p == view_.placements.end()) return NotFound("app '" + m_.app + "' is not placed");
    if (!view_.apps.count(m_.app)) return NotFound("app '" + m_.app + "' was deleted");
    placement_ = p->second;
    return Status::Ok();
  }

  Result<const cluster::NodeInfo*> Live(const std::string& id) const {
    auto n = view_.nodes.find(id);
    if (n == view_.nodes.end()) return Unavailable("node '" + id + "' is not live");
    return &n->second;
  }

  Result<json> Call(const std::string& node, const std::string& path, const json& body,
                    milliseconds timeout) {
    HC_ASSIGN_OR_RETURN(const cluster::NodeInfo* n, Live(node));
    HC_ASSIGN_OR_RETURN(std::string text, env_.call(*n, path, body.dump(), timeout));
    json j = json::parse(text, nullptr, false);
    if (!j.is_object())
      return Unavailable("node '" + node + "' answered " + path + " with no JSON");
    return j;
  }

  // Writes `next` over the current placement (compare-and-swap + guard).
  Status WritePlacement(const cluster::Placement& next) {
    cluster::PlacementWrite w;
    w.kind = cluster::PlacementWrite::kUpdate;
    w.placement = next;
    w.app = view_.apps.at(m_.app);
    w.expected_mod_revision = view_.placement_mod_revision.at(m_.app);
    w.previous_nodes = {placement_.primary};
    w.previous_nodes.insert(w.previous_nodes.end(), placement_.replicas.begin(),
                            placement_.replicas.end());
    cluster::ClusterView after;
    HC_ASSIGN_OR_RETURN(size_t n, env_.cs->ApplyPlacements({w}, env_.guard, &after));
    if (n != 1) return Conflict("the placement changed meanwhile");
    return Status::Ok();
  }

  Status Prepare() {
    HC_RETURN_IF_ERROR(Reload());
    m_.source = placement_.primary;
    if (m_.target == placement_.primary)
      return InvalidArgument("'" + m_.app + "' already runs on '" + m_.target + "'");
    HC_RETURN_IF_ERROR(Live(m_.source).status().Annotate("source"));
    HC_RETURN_IF_ERROR(Live(m_.target).status().Annotate("target"));
    auto& r = placement_.replicas;
    if (std::find(r.begin(), r.end(), m_.target) == r.end()) {
      Step("copying", "making '" + m_.target + "' a replica");
      cluster::Placement next = placement_;
      next.replicas.push_back(m_.target);
      HC_RETURN_IF_ERROR(WritePlacement(next));
      HC_RETURN_IF_ERROR(Reload());
    }
    return Status::Ok();
  }

  // Increments while the app runs, until one is small.
  Status PreCopy() {
    for (int round = 1; round <= env_.max_precopy_rounds; ++round) {
      if (Cancelled()) return Unavailable("the leader stepped down");
      Step("copying", "pre-copy round " + std::to_string(round) + " (" + Mib(m_.precopy_bytes) +
                          " sent so far)");
      HC_ASSIGN_OR_RETURN(json r,
                          Call(m_.source, "/v1/node/sync", {{"app", m_.app}, {"peer", m_.target}},
                               milliseconds(15 * 60 * 1000)));
      uint64_t bytes = r.value("bytes", uint64_t{0});
      m_.precopy_bytes += bytes;
      if (bytes <= env_.precopy_small_bytes) return Status::Ok();
    }
    return Status::Ok();  // still busy: the final increment carries the rest
  }

  // The target creates the app's container now (not run), so that after
  // the switch its start only lets it go. Best effort: without it the
  // target starts the app in full.
  void PrepareTarget() {
    if (Cancelled()) return;
    Step("copying", "preparing the app's container on '" + m_.target + "'");
    auto r = Call(m_.target, "/v1/node/prepare", {{"app", m_.app}, {"max_ms", env_.handoff_max_ms}},
                  milliseconds(60000));
    if (!r.ok())
      LogInfo("move %s: '%s' did not prepare it ahead (%s); it starts there in full",
              m_.app.c_str(), m_.target.c_str(), r.status().ToString().c_str());
  }

  // The hold, the stop on the source, the last increment.
  Status HandOff() {
    if (Cancelled()) return Unavailable("the leader stepped down");
    Step("handing-off", "holding requests; stopping on '" + m_.source + "'");
    HC_RETURN_IF_ERROR(env_.cs->PutHold(m_.app, env_.hold_seconds, "move to " + m_.target));
    held_ = true;
    hold_at_ = Clock::now();
    // Every proxy learns of the hold through its watch within milliseconds;
    // requests they sent before it finish meanwhile (a static answer takes a
    // few ms), so stopping the app does not cut them.
    std::this_thread::sleep_for(milliseconds(env_.drain_ms));
    HC_ASSIGN_OR_RETURN(
        json r, Call(m_.source, "/v1/node/handoff",
                     {{"app", m_.app}, {"peer", m_.target}, {"max_ms", env_.handoff_max_ms}},
                     milliseconds(env_.handoff_max_ms)));
    handed_off_ = true;
    m_.final_bytes = r.value("bytes", uint64_t{0});
    return Status::Ok();
  }

  Status Switch() {
    if (Cancelled()) return Unavailable("the leader stepped down");
    HC_RETURN_IF_ERROR(Reload());
    if (placement_.primary != m_.source)
      return Conflict("the primary changed to '" + placement_.primary + "' meanwhile");
    HC_RETURN_IF_ERROR(Live(m_.target).status());
    cluster::Placement next = placement_;
    next.primary = m_.target;
    next.epoch = placement_.epoch + 1;
    next.state = cluster::PlacementState::kRunning;
    // The source keeps its copy as a replica (replication reverses
    // incrementally); the app's other replicas follow, up to its count.
    next.replicas = {m_.source};
    for (const auto& r : placement_.replicas)
      if (r != m_.target && r != m_.source) next.replicas.push_back(r);
    size_t want = std::max<size_t>(view_.apps.at(m_.app).replicas, 1);
    if (next.replicas.size() > want) next.replicas.resize(want);
    m_.epoch = next.epoch;
    HC_RETURN_IF_ERROR(WritePlacement(next));
    switched_ = true;
    Step("starting", "'" + m_.target + "' is primary at epoch " + std::to_string(m_.epoch) +
                         "; waiting for the app to be ready there");
    return Status::Ok();
  }

  // Waits for the target to report the app ready at the new epoch, then
  // releases the hold.
  cluster::MoveRecord FinishStart() {
    auto until = Clock::now() + milliseconds(env_.ready_timeout_ms);
    bool ready = false;
    std::string last;
    while (Clock::now() < until && !Cancelled()) {
      auto obs = env_.cs->ListObserved(m_.app);
      if (obs.ok()) {
        for (const auto& o : *obs) {
          if (o.node != m_.target || o.role != "primary" || o.epoch != m_.epoch) continue;
          ready = o.ready;
          last = o.state + (o.message.empty() ? "" : ": " + o.message);
        }
      }
      if (ready) break;
      std::this_thread::sleep_for(milliseconds(5));
    }
    if (!ready && Cancelled()) return m_;
    if (held_) (void)env_.cs->ReleaseHold(m_.app);
    if (hold_at_ != Clock::time_point{})
      m_.pause_ms = std::chrono::duration_cast<milliseconds>(Clock::now() - hold_at_).count();
    if (!ready)
      return End("failed", "'" + m_.target + "' is primary now but the app was not ready within " +
                               std::to_string(env_.ready_timeout_ms / 1000) + " s (" +
                               (last.empty() ? "no status" : last) + "); see hc app show " +
                               m_.app);
    return End("done", "moved from '" + m_.source + "' to '" + m_.target + "': pre-copy " +
                           Mib(m_.precopy_bytes) + ", final increment " + Mib(m_.final_bytes) +
                           ", requests held " + std::to_string(m_.pause_ms) + " ms");
  }

  // Before the switch: the app goes back to running on the source.
  cluster::MoveRecord Undo(const std::string& why) {
    if (switched_) return FinishStart();
    if (handed_off_ || held_) {
      auto r = Call(m_.source, "/v1/node/resume", {{"app", m_.app}}, milliseconds(10000));
      if (!r.ok())
        LogWarn("move %s: cannot resume it on %s (%s); it restarts there on its own within %d s",
                m_.app.c_str(), m_.source.c_str(), r.status().ToString().c_str(),
                env_.handoff_max_ms / 1000);
    }
    if (held_) (void)env_.cs->ReleaseHold(m_.app);
    return Fail(why);
  }

  // A move left half-way by a leader that died.
  cluster::MoveRecord Recover() {
    Status s = Reload();
    if (!s.ok()) return Fail(s.message());
    if (m_.epoch != 0 && placement_.primary == m_.target && placement_.epoch == m_.epoch) {
      switched_ = held_ = true;  // finish: wait for ready, release the hold
      return FinishStart();
    }
    held_ = true;
    handed_off_ = !m_.source.empty();
    return Undo("the leader changed during the move (it was " + m_.state + ")");
  }

  const MoveEnv& env_;
  cluster::MoveRecord m_;
  cluster::ClusterView view_;
  cluster::Placement placement_;
  bool held_ = false, handed_off_ = false, switched_ = false;
  Clock::time_point hold_at_{};
};

}  // namespace

cluster::MoveRecord RunMove(const MoveEnv& env, cluster::MoveRecord m) {
  return Move(env, std::move(m)).Run();
}

}  // namespace hc::agent
