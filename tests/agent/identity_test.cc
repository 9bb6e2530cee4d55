// hcd's start-up identity without a cluster: renewal of a certificate that
// is about to expire, re-issue for new addresses, and what a node with bad
// files is told. etcd is unreachable here (a node with a certificate must
// start without it).
#include "agent/identity.h"

#include <gtest/gtest.h>

#include <ctime>

#include "common/fs.h"
#include "pki/cert.h"

namespace hc::agent {
namespace {

constexpr int64_t kDay = 86400;

class IdentityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/hc-identity-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    opts_.data_dir = tmpl;
    opts_.node_id = "node1";
    opts_.addresses = {"10.0.0.1"};
  }
  void TearDown() override { (void)RemoveTree(opts_.data_dir); }

  pki::PkiDir Dir() const { return pki::PkiDir(JoinPath(opts_.data_dir, "pki")); }

  // Writes a CA and a node certificate issued at `issued` for `id`.
  void Install(int64_t issued, const std::string& id = "node1", bool with_ca_key = true) {
    auto ca = pki::CreateCa("HybridCluster CA test", 3650, issued);
    ASSERT_TRUE(ca.ok());
    auto key = pki::CreateKeyAndCsr(id);
    ASSERT_TRUE(key.ok());
    auto cert = pki::SignNodeCert(*ca, key->csr_pem,
                                  {.node_id = id, .addresses = {"10.0.0.1"}, .now = issued});
    ASSERT_TRUE(cert.ok());
    ASSERT_TRUE(Dir().SaveCa(*ca).ok());
    ASSERT_TRUE(Dir().SaveNode(*cert, key->key_pem).ok());
    if (!with_ca_key) ASSERT_EQ(::unlink(Dir().CaKeyPath().c_str()), 0);
  }

  Result<pki::NodeIdentity> Establish() {
    cluster::EtcdClient etcd({.endpoints = {"http://127.0.0.1:1"}});
    cluster::ClusterStore cs(&etcd, "/hc/");
    return EstablishIdentity(opts_, &cs, nullptr);
  }

  IdentityOptions opts_;
};

TEST_F(IdentityTest, AFreshCertificateIsUsedAsItIs) {
  Install(time(nullptr));
  std::string before = *ReadFileToString(Dir().NodeCertPath());
  auto id = Establish();
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(id->cert_pem, before);
  EXPECT_EQ(id->node_id, "node1");
  auto again = RenewIdentityIfDue(opts_, *id);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->has_value());
}

TEST_F(IdentityTest, ACertificateWithLessThan30DaysLeftIsRenewedWithTheSameKey) {
  Install(time(nullptr) - 340 * kDay);
  auto old = Dir().LoadIdentity("node1");
  ASSERT_TRUE(old.ok());
  auto renewed = RenewIdentityIfDue(opts_, *old);
  ASSERT_TRUE(renewed.ok()) << renewed.status().ToString();
  ASSERT_TRUE(renewed->has_value());
  EXPECT_GT((*renewed)->not_after, time(nullptr) + 360 * kDay);
  EXPECT_EQ((*renewed)->key_pem, old->key_pem);
  EXPECT_TRUE(pki::VerifyNodeCert((*renewed)->ca_pem, (*renewed)->cert_pem, "node1").ok());
  EXPECT_EQ(*ReadFileToString(Dir().NodeCertPath()), (*renewed)->cert_pem);
}

TEST_F(IdentityTest, AnExpiredCertificateIsRenewedAtStart) {
  Install(time(nullptr) - 400 * kDay);
  auto id = Establish();
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_TRUE(pki::VerifyNodeCert(id->ca_pem, id->cert_pem, "node1").ok());
}

TEST_F(IdentityTest, NewAddressesGetANewCertificate) {
  Install(time(nullptr));
  opts_.addresses = {"10.0.0.1", "203.0.113.1"};
  auto id = Establish();
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto info = pki::InspectCert(id->cert_pem);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->ip_addresses, (std::vector<std::string>{"10.0.0.1", "203.0.113.1"}));
}

TEST_F(IdentityTest, WithoutTheCaKeyAnExpiredCertificateIsRefused) {
  Install(time(nullptr) - 400 * kDay, "node1", /*with_ca_key=*/false);
  auto id = Establish();
  EXPECT_EQ(id.status().code(), Code::kPermissionDenied);
  EXPECT_NE(id.status().message().find("expired on"), std::string::npos) << id.status().message();
  EXPECT_NE(id.status().message().find("hc cluster join-token"), std::string::npos);
}

TEST_F(IdentityTest, AnotherNodesFilesAreRefused) {
  Install(time(nullptr), "node2");
  auto id = Establish();
  EXPECT_EQ(id.status().code(), Code::kPermissionDenied);
  EXPECT_NE(id.status().message().find("for node 'node2', not 'node1'"), std::string::npos)
      << id.status().message();
  EXPECT_NE(id.status().message().find("move"), std::string::npos);
}

TEST_F(IdentityTest, ADamagedTokenFailsBeforeWaitingForEtcd) {
  opts_.join_token = "hcjoin1.nope";
  auto id = Establish();
  EXPECT_EQ(id.status().code(), Code::kInvalidArgument);
  EXPECT_NE(id.status().message().find("parts separated by '.'"), std::string::npos);
}

}  // namespace
}  // namespace hc::agent
