// The cluster's certificate authority and node certificates (X.509, ECDSA
// P-256, SHA-256 signatures), as PEM text. OpenSSL stays behind cert.cc.
//
//   HC_ASSIGN_OR_RETURN(CaMaterial ca, CreateCa("HybridCluster CA 1f2e"));
//   HC_ASSIGN_OR_RETURN(KeyAndCsr k, CreateKeyAndCsr("node2"));
//   HC_ASSIGN_OR_RETURN(std::string crt,
//                       SignNodeCert(ca, k.csr_pem, {.node_id = "node2",
//                                                   .addresses = {"10.0.0.2"}}));
//   HC_RETURN_IF_ERROR(VerifyNodeCert(ca.cert_pem, crt, "node2"));
//
// Profiles (docs/design.md, "Cluster PKI"):
// - CA: self-signed, CN given, O=HybridCluster, basicConstraints critical
//   CA:TRUE pathlen 0, keyUsage critical keyCertSign+cRLSign, 10 years.
// - node: CN = node id, SAN DNS:<node id> + IP:<each address>,
//   (DNS:<address> for an address that is a host name),
//   basicConstraints critical CA:FALSE, keyUsage critical digitalSignature,
//   extendedKeyUsage serverAuth+clientAuth, 1 year. Only the public key of
//   the CSR is used: the signer decides every name.
// Validity starts one hour in the past, so clocks a little behind accept it.
//
// Thread-safety: every function is reentrant. Times are Unix seconds; `now`
// 0 means the system clock.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/hash.h"
#include "common/status.h"

namespace hc::pki {

struct CaMaterial {
  std::string cert_pem;
  std::string key_pem;  // PKCS#8, unencrypted: keep it 0600
};

Result<CaMaterial> CreateCa(const std::string& common_name, int days = 3650, int64_t now = 0);

struct KeyAndCsr {
  std::string key_pem;
  std::string csr_pem;
};
// A new P-256 key and a CSR for it with CN = node_id.
Result<KeyAndCsr> CreateKeyAndCsr(const std::string& node_id);
// A CSR for an existing key (renewal keeps the key).
Result<std::string> CreateCsr(const std::string& key_pem, const std::string& node_id);

struct NodeCertSpec {
  std::string node_id;                 // CN and DNS SAN: 1-63 of a-z, 0-9, '-'
  std::vector<std::string> addresses;  // IP SANs (IPv4/IPv6 literals); host names become DNS SANs
  int days = 365;
  int64_t now = 0;
};
// Checks the CSR's self-signature and the spec, then issues a node
// certificate for the CSR's public key, signed by the CA.
Result<std::string> SignNodeCert(const CaMaterial& ca, std::string_view csr_pem,
                                 const NodeCertSpec& spec);

struct CertInfo {
  std::string common_name;
  std::string issuer_common_name;
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;  // canonical text (inet_ntop)
  int64_t not_before = 0;
  int64_t not_after = 0;
  bool is_ca = false;
  Digest fingerprint{};  // SHA-256 of the DER encoding
};
Result<CertInfo> InspectCert(std::string_view cert_pem);
// SHA-256 of the certificate's DER encoding (what `openssl x509 -fingerprint
// -sha256` prints).
Result<Digest> CertFingerprint(std::string_view cert_pem);
// "ab:cd:..." upper-case hex with colons, as openssl prints it.
std::string FingerprintText(const Digest& d);

// The certificate chains to the CA (signature, validity at `now`, CA
// constraints), is for both TLS server and client use, and names node_id
// (CN and DNS SAN). PermissionDenied with the reason otherwise: "expired on
// ...", "not issued by this cluster's CA", "is for node 'x', not 'y'".
Status VerifyNodeCert(std::string_view ca_pem, std::string_view cert_pem,
                      const std::string& node_id, int64_t now = 0);
// The CA certificate is self-signed, a CA, and valid at `now`.
Status VerifyCaCert(std::string_view ca_pem, int64_t now = 0);
// The private key belongs to the certificate.
Status CheckKeyMatchesCert(std::string_view cert_pem, std::string_view key_pem);

}  // namespace hc::pki
