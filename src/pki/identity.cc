#include "pki/identity.h"

#include <sys/stat.h>
#include <unistd.h>

#include "common/fs.h"

namespace hc::pki {

bool PkiDir::HasNodeCert() const {
  return PathExists(NodeCertPath());
}

bool PkiDir::HasCaKey() const {
  return PathExists(CaKeyPath());
}

Result<NodeIdentity> PkiDir::LoadIdentity(const std::string& node_id) const {
  NodeIdentity id;
  id.node_id = node_id;
  HC_ASSIGN_OR_RETURN(id.ca_pem, ReadFileToString(CaCertPath()));
  HC_ASSIGN_OR_RETURN(id.cert_pem, ReadFileToString(NodeCertPath()));
  HC_ASSIGN_OR_RETURN(id.key_pem, ReadFileToString(NodeKeyPath()));
  HC_RETURN_IF_ERROR(CheckKeyMatchesCert(id.cert_pem, id.key_pem).Annotate(NodeKeyPath()));
  HC_ASSIGN_OR_RETURN(CertInfo node, InspectCert(id.cert_pem));
  HC_ASSIGN_OR_RETURN(id.ca_fingerprint, CertFingerprint(id.ca_pem));
  id.not_after = node.not_after;
  return id;
}

Result<CaMaterial> PkiDir::LoadCa() const {
  CaMaterial ca;
  HC_ASSIGN_OR_RETURN(ca.cert_pem, ReadFileToString(CaCertPath()));
  HC_ASSIGN_OR_RETURN(ca.key_pem, ReadFileToString(CaKeyPath()));
  return ca;
}

Status PkiDir::SaveCa(const CaMaterial& ca) const {
  HC_RETURN_IF_ERROR(MakeDirs(dir_, 0700));
  HC_RETURN_IF_ERROR(WriteFileAtomic(CaKeyPath(), ca.key_pem, true, 0600));
  return WriteFileAtomic(CaCertPath(), ca.cert_pem, true, 0644);
}

Status PkiDir::SaveCaCert(const std::string& ca_pem) const {
  HC_RETURN_IF_ERROR(MakeDirs(dir_, 0700));
  return WriteFileAtomic(CaCertPath(), ca_pem, true, 0644);
}

Status PkiDir::SaveNode(const std::string& cert_pem, const std::string& key_pem) const {
  HC_RETURN_IF_ERROR(MakeDirs(dir_, 0700));
  // The key first: a node.crt on disk means a usable identity.
  HC_RETURN_IF_ERROR(WriteFileAtomic(NodeKeyPath(), key_pem, true, 0600));
  return WriteFileAtomic(NodeCertPath(), cert_pem, true, 0644);
}

Status PkiDir::RemoveAll() const {
  for (const auto& p : {NodeCertPath(), NodeKeyPath(), CaCertPath(), CaKeyPath()})
    if (::unlink(p.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("remove " + p, errno);
  return Status::Ok();
}

}  // namespace hc::pki
