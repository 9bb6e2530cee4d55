// A node's identity in the cluster PKI and the files that hold it:
//
//   <data_dir>/pki/ca.crt     the cluster CA certificate (PEM, 0644)
//   <data_dir>/pki/ca.key     the CA's private key (PKCS#8 PEM, 0600)
//   <data_dir>/pki/node.crt   this node's certificate (PEM, 0644)
//   <data_dir>/pki/node.key   this node's private key (PKCS#8 PEM, 0600)
//
// Every member keeps the CA key, so any member can admit new nodes and renew
// its own certificate; the CA key never goes to etcd.
//
// Thread-safety: PkiDir holds only a path; concurrent writers of one
// directory are serialised by hcd's data_dir lock.
#pragma once

#include <cstdint>
#include <string>

#include "common/hash.h"
#include "common/status.h"
#include "pki/cert.h"

namespace hc::pki {

// What TLS needs: the trust anchor, the node's certificate and key.
struct NodeIdentity {
  std::string node_id;
  std::string ca_pem;    // cluster CA certificate
  std::string cert_pem;  // this node's certificate (CN/SAN = node_id)
  std::string key_pem;   // this node's private key
  int64_t not_after = 0;
  Digest ca_fingerprint{};
};

class PkiDir {
 public:
  explicit PkiDir(std::string dir) : dir_(std::move(dir)) {}
  const std::string& dir() const { return dir_; }
  std::string CaCertPath() const { return dir_ + "/ca.crt"; }
  std::string CaKeyPath() const { return dir_ + "/ca.key"; }
  std::string NodeCertPath() const { return dir_ + "/node.crt"; }
  std::string NodeKeyPath() const { return dir_ + "/node.key"; }

  bool HasNodeCert() const;
  bool HasCaKey() const;
  // Reads ca.crt, node.crt and node.key and checks that the key belongs to
  // the certificate (not the validity: see VerifyNodeCert).
  Result<NodeIdentity> LoadIdentity(const std::string& node_id) const;
  // ca.crt and ca.key.
  Result<CaMaterial> LoadCa() const;
  // Creates the directory (0700) and writes the files atomically, keys 0600.
  Status SaveCa(const CaMaterial& ca) const;
  Status SaveCaCert(const std::string& ca_pem) const;
  Status SaveNode(const std::string& cert_pem, const std::string& key_pem) const;
  // Removes every file (used when a first-node race is lost).
  Status RemoveAll() const;

 private:
  std::string dir_;
};

}  // namespace hc::pki
