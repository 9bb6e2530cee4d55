// Network partitions: a 3-node cluster in netns mode (each hcd in its own
// network namespace, joined to a bridge in the root namespace; etcd on the
// bridge), then one node cut off with PartitionNode and reconnected with
// HealNode. The test reaches every node from the root namespace, over the
// bridge, like an operator would. Needs root and `ip netns`; addresses
// 10.231.7.0/24, tag "nt" (docs/design.md, "Testing").
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "cluster/local_cluster_test.h"
#include "common/subprocess.h"
#include "devcluster/local_cluster.h"

namespace hc {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr char kTag[] = "nt";
constexpr char kSubnet[] = "10.231.7";

bool IpSucceeds(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"ip"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = RunCommand(argv);
  return r.ok() && r->ok();
}

// Our names among `ip netns list` (empty when none is left).
std::string OurNamespaces() {
  auto r = RunCommand({"ip", "netns", "list"});
  if (!r.ok()) return "(ip netns list failed)";
  std::string ours;
  size_t at = 0;
  while ((at = r->out.find(std::string("hcn-") + kTag + "-", at)) != std::string::npos) {
    size_t end = r->out.find_first_of(" \n", at);
    ours += r->out.substr(at, end - at) + " ";
    at = end;
  }
  return ours;
}

class NetnsClusterTest : public testing::LocalClusterTest {
 protected:
  static void SetUpTestSuite() {
    if (!devcluster::LocalCluster::NetnsSupported()) {
      skip_ = "needs root and ip netns";
      return;
    }
    // What a crashed run would leave: our bridge with a wrong address and a
    // namespace of ours. Start must clear them and build afresh. (When a
    // real crashed run left them, these fail and that is fine too.)
    IpSucceeds({"link", "add", std::string("hcb-") + kTag, "type", "bridge"});
    IpSucceeds({"addr", "add", "10.231.99.1/24", "dev", std::string("hcb-") + kTag});
    IpSucceeds({"netns", "add", std::string("hcn-") + kTag + "-2"});

    devcluster::LocalClusterOptions o;
    o.nodes = 3;
    o.netns = true;
    o.netns_tag = kTag;
    o.netns_subnet = kSubnet;  // bridge and etcd .1, node k .(k+1)
    o.etcd_client_port = 23797;
    o.etcd_peer_port = 23807;
    o.api_port = 7487;
    o.proxy_port = 8087;  // bound inside each namespace, on the node's address
    o.lease_ttl_seconds = 3;
    o.reconcile_interval_ms = 500;
    StartCluster(o);
  }

  static void TearDownTestSuite() {
    bool had_cluster = cluster_ != nullptr;
    testing::LocalClusterTest::TearDownTestSuite();
    if (!had_cluster) return;
    // Nothing of ours is left in the root namespace.
    EXPECT_EQ(OurNamespaces(), "");
    EXPECT_FALSE(IpSucceeds({"link", "show", std::string("hcb-") + kTag}));
    for (int k = 1; k <= 3; k++)
      EXPECT_FALSE(
          IpSucceeds({"link", "show", std::string("hcv-") + kTag + "-" + std::to_string(k)}));
  }

  void TearDown() override {
    // A failed test must not leave the next one with a node cut off.
    if (!cluster_ || !skip_.empty()) return;
    for (int k = 1; k <= cluster_->nodes(); k++) EXPECT_TRUE(cluster_->HealNode(k).ok());
  }

  // Node ids in GET /v1/nodes through node k ({} when it does not answer).
  static std::set<std::string> NodesSeenBy(int k) {
    auto [st, j] = Call(k, "GET", "/v1/nodes");
    std::set<std::string> ids;
    if (st != 200 || !j.is_object()) return ids;
    for (const auto& n : j["nodes"]) ids.insert(n.value("id", ""));
    return ids;
  }

  // A TCP connect to addr:port within timeout_ms: 0 when it connected, else
  // the errno (ETIMEDOUT when nothing answered at all).
  static int ConnectError(const std::string& addr, uint16_t port, int timeout_ms) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno;
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    inet_pton(AF_INET, addr.c_str(), &sa.sin_addr);
    int err = 0;
    if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      err = errno;
      if (err == EINPROGRESS) {
        pollfd p{fd, POLLOUT, 0};
        if (poll(&p, 1, timeout_ms) == 1) {
          socklen_t len = sizeof err;
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        } else {
          err = ETIMEDOUT;
        }
      }
    }
    close(fd);
    return err;
  }
};

TEST_F(NetnsClusterTest, EveryNodeAnswersFromTheRootNamespace) {
  const std::set<std::string> all = {"node1", "node2", "node3"};
  for (int k = 1; k <= 3; k++) {
    EXPECT_EQ(cluster_->NodeAddress(k), std::string(kSubnet) + "." + std::to_string(k + 1));
    EXPECT_EQ(NodesSeenBy(k), all) << "through node" << k;
    // Each hcd runs in its own namespace, under the pid we recorded.
    auto mine = RunCommand({"ip", "netns", "identify", std::to_string(cluster_->NodePid(k))});
    ASSERT_TRUE(mine.ok());
    EXPECT_EQ(mine->out, cluster_->NodeNetns(k) + "\n");
  }
  EXPECT_EQ(cluster_->EtcdUrl(), std::string("http://") + kSubnet + ".1:23797");
  // Every node advertises its namespace address.
  auto [st, j] = Call(2, "GET", "/v1/nodes");
  ASSERT_EQ(st, 200);
  for (const auto& n : j["nodes"]) {
    int k = std::atoi(n.value("id", "node0").c_str() + 4);
    EXPECT_EQ(n.value("address", ""), cluster_->NodeAddress(k)) << n.dump();
  }
  // And `hc` works against each of them from here.
  for (int k = 1; k <= 3; k++) {
    auto r = RunCommand({HC_HC_PATH, "cluster", "status", "--api", cluster_->ApiUrl(k)});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->exit_code, 0) << r->out << r->err;
    for (int n = 1; n <= 3; n++)
      EXPECT_NE(r->out.find("node" + std::to_string(n)), std::string::npos) << r->out;
  }
}

TEST_F(NetnsClusterTest, PartitionedNodeLeavesAndComesBackWhenHealed) {
  const std::set<std::string> all = {"node1", "node2", "node3"};
  ASSERT_EQ(NodesSeenBy(2), all);

  auto [lst, before] = Call(2, "GET", "/v1/cluster");
  std::printf("leader before the partition: %s\n",
              lst == 200 ? before.value("leader", "").c_str() : "?");
  auto cut = Clock::now();
  ASSERT_TRUE(cluster_->PartitionNode(1).ok());
  // Its lease expires (ttl 3 s) since it cannot reach etcd any more.
  std::set<std::string> seen;
  bool gone = WaitFor(
      [&] {
        seen = NodesSeenBy(2);
        return seen == std::set<std::string>{"node2", "node3"};
      },
      10000);
  double gone_s = std::chrono::duration<double>(Clock::now() - cut).count();
  std::printf("node1 left /v1/nodes %.1f s after the partition\n", gone_s);
  ASSERT_TRUE(gone) << "still seen: " << json(seen).dump() << Logs();
  EXPECT_LT(gone_s, 6.5);
  // The process still runs; it is only unreachable, silently: no RST, no
  // refusal, the connect just gets no answer.
  EXPECT_TRUE(cluster_->NodeRunning(1));
  EXPECT_EQ(ConnectError(cluster_->NodeAddress(1), 7487, 1000), ETIMEDOUT);
  EXPECT_EQ(Call(1, "GET", "/v1/health").first, 0);
  // The rest of the cluster carries on with a leader of its own.
  EXPECT_TRUE(WaitFor(
      [] {
        auto [st, j] = Call(2, "GET", "/v1/cluster");
        std::string leader = st == 200 ? j.value("leader", "") : "";
        return !leader.empty() && leader != "node1";
      },
      15000));

  auto healed = Clock::now();
  ASSERT_TRUE(cluster_->HealNode(1).ok());
  bool back = WaitFor([&] { return NodesSeenBy(2) == all; }, 20000);
  std::printf("node1 back in /v1/nodes %.1f s after healing\n",
              std::chrono::duration<double>(Clock::now() - healed).count());
  EXPECT_TRUE(back) << Logs();
  EXPECT_TRUE(WaitFor([&] { return NodesSeenBy(1) == all; }, 10000));
  EXPECT_EQ(ConnectError(cluster_->NodeAddress(1), 7487, 1000), 0);
}

TEST_F(NetnsClusterTest, PartitionOutsideNetnsModeIsRefused) {
  devcluster::LocalClusterOptions o;
  o.base_dir = "/tmp/hc-netns-unused-" + std::to_string(getpid());
  o.netns_tag = "bad-tag!";
  o.netns = true;
  o.netns_subnet = kSubnet;
  EXPECT_FALSE(devcluster::LocalCluster::Create(o).ok());
  o.netns_tag = kTag;
  o.netns_subnet = "10.231";
  EXPECT_FALSE(devcluster::LocalCluster::Create(o).ok());
  o.netns = false;
  auto c = devcluster::LocalCluster::Create(o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->PartitionNode(1).ok());
  EXPECT_FALSE(c->HealNode(1).ok());
  EXPECT_TRUE(RemoveTree(o.base_dir).ok());
}

}  // namespace
}  // namespace hc
