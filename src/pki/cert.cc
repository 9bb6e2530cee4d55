#include "pki/cert.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <ctime>
#include <memory>

namespace hc::pki {
namespace {

template <typename T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using ReqPtr = std::unique_ptr<X509_REQ, Deleter<X509_REQ, X509_REQ_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using StorePtr = std::unique_ptr<X509_STORE, Deleter<X509_STORE, X509_STORE_free>>;
using StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX, X509_STORE_CTX_free>>;
using NamesPtr = std::unique_ptr<GENERAL_NAMES, Deleter<GENERAL_NAMES, GENERAL_NAMES_free>>;

int64_t Now(int64_t now) {
  return now != 0 ? now : static_cast<int64_t>(time(nullptr));
}

// The first queued OpenSSL error as text (and the queue cleared).
std::string SslError() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

BioPtr MemBio(std::string_view s) {
  return BioPtr(BIO_new_mem_buf(s.data(), static_cast<int>(s.size())));
}

std::string BioText(BIO* b) {
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  return std::string(data, static_cast<size_t>(n));
}

Result<X509Ptr> ParseCert(std::string_view pem, const char* what) {
  auto bio = MemBio(pem);
  X509Ptr x(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!x) {
    ERR_clear_error();
    return InvalidArgument(std::string(what) +
                           " is not a PEM certificate (-----BEGIN CERTIFICATE-----)");
  }
  return x;
}

Result<Pkey> ParseKey(std::string_view pem, const char* what) {
  auto bio = MemBio(pem);
  Pkey k(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!k) {
    ERR_clear_error();
    return InvalidArgument(std::string(what) + " is not a PEM private key");
  }
  return k;
}

Result<Pkey> NewP256() {
  Pkey k(EVP_EC_gen("P-256"));
  if (!k) return Internal("cannot generate a P-256 key: " + SslError());
  return k;
}

std::string KeyPem(EVP_PKEY* k) {
  BioPtr b(BIO_new(BIO_s_mem()));
  HC_CHECK(PEM_write_bio_PrivateKey(b.get(), k, nullptr, nullptr, 0, nullptr, nullptr) == 1,
           "PEM_write_bio_PrivateKey");
  return BioText(b.get());
}

std::string CertPem(X509* x) {
  BioPtr b(BIO_new(BIO_s_mem()));
  HC_CHECK(PEM_write_bio_X509(b.get(), x) == 1, "PEM_write_bio_X509");
  return BioText(b.get());
}

// A random positive 127-bit serial (RFC 5280: at most 20 octets, positive).
void SetSerial(X509* x) {
  unsigned char r[16];
  HC_CHECK(RAND_bytes(r, sizeof r) == 1, "RAND_bytes");
  r[0] &= 0x7f;
  std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>> bn(BN_bin2bn(r, sizeof r, nullptr));
  HC_CHECK(bn && BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(x)) != nullptr, "serial");
}

Status AddExt(X509* x, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, x, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext) return InvalidArgument("bad certificate extension '" + value + "': " + SslError());
  int ok = X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  if (ok != 1) return Internal("X509_add_ext: " + SslError());
  return Status::Ok();
}

void SetName(X509_NAME* n, const std::string& cn) {
  X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("HybridCluster"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
}

std::string NameCn(const X509_NAME* n) {
  int i = X509_NAME_get_index_by_NID(n, NID_commonName, -1);
  if (i < 0) return "";
  ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, i));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, s);
  if (len < 0) return "";
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

int64_t TimeOf(const ASN1_TIME* t) {
  struct tm tm = {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

std::string Date(int64_t t) {
  time_t tt = static_cast<time_t>(t);
  struct tm tm;
  gmtime_r(&tt, &tm);
  char buf[40];
  strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

Status ValidNodeId(const std::string& id) {
  if (id.empty() || id.size() > 63)
    return InvalidArgument("node id '" + id + "' must be 1 to 63 characters long");
  for (char c : id)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
      return InvalidArgument("node id '" + id + "' may only use a-z, 0-9 and '-'");
  return Status::Ok();
}

Status SetValidity(X509* x, int64_t now, int days) {
  if (days < 1 || days > 36500) return InvalidArgument("validity must be 1 to 36500 days");
  if (!ASN1_TIME_set(X509_getm_notBefore(x), static_cast<time_t>(now - 3600)) ||
      !ASN1_TIME_set(X509_getm_notAfter(x), static_cast<time_t>(now + int64_t{days} * 86400)))
    return Internal("cannot set the validity: " + SslError());
  return Status::Ok();
}

Result<CertInfo> Inspect(X509* x) {
  CertInfo ci;
  ci.common_name = NameCn(X509_get_subject_name(x));
  ci.issuer_common_name = NameCn(X509_get_issuer_name(x));
  ci.not_before = TimeOf(X509_get0_notBefore(x));
  ci.not_after = TimeOf(X509_get0_notAfter(x));
  ci.is_ca = X509_check_ca(x) != 0;
  unsigned int len = 0;
  HC_CHECK(X509_digest(x, EVP_sha256(), ci.fingerprint.data(), &len) == 1 && len == 32,
           "X509_digest");
  NamesPtr names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr)));
  if (names) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); i++) {
      const GENERAL_NAME* g = sk_GENERAL_NAME_value(names.get(), i);
      if (g->type == GEN_DNS) {
        const ASN1_STRING* s = g->d.dNSName;
        ci.dns_names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                  static_cast<size_t>(ASN1_STRING_length(s)));
      } else if (g->type == GEN_IPADD) {
        const ASN1_STRING* s = g->d.iPAddress;
        char buf[INET6_ADDRSTRLEN] = {};
        int n = ASN1_STRING_length(s);
        if (n == 4 || n == 16)
          inet_ntop(n == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(s), buf, sizeof buf);
        ci.ip_addresses.emplace_back(buf);
      }
    }
  }
  return ci;
}

}  // namespace

Result<CaMaterial> CreateCa(const std::string& common_name, int days, int64_t now) {
  if (common_name.empty() || common_name.size() > 64)
    return InvalidArgument("the CA's name must be 1 to 64 characters");
  HC_ASSIGN_OR_RETURN(Pkey key, NewP256());
  X509Ptr x(X509_new());
  X509_set_version(x.get(), 2);
  SetSerial(x.get());
  HC_RETURN_IF_ERROR(SetValidity(x.get(), Now(now), days));
  SetName(X509_get_subject_name(x.get()), common_name);
  X509_set_issuer_name(x.get(), X509_get_subject_name(x.get()));
  X509_set_pubkey(x.get(), key.get());
  HC_RETURN_IF_ERROR(AddExt(x.get(), x.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
  HC_RETURN_IF_ERROR(AddExt(x.get(), x.get(), NID_key_usage, "critical,keyCertSign,cRLSign"));
  HC_RETURN_IF_ERROR(AddExt(x.get(), x.get(), NID_subject_key_identifier, "hash"));
  if (X509_sign(x.get(), key.get(), EVP_sha256()) == 0)
    return Internal("cannot sign the CA certificate: " + SslError());
  return CaMaterial{CertPem(x.get()), KeyPem(key.get())};
}

Result<std::string> CreateCsr(const std::string& key_pem, const std::string& node_id) {
  HC_RETURN_IF_ERROR(ValidNodeId(node_id));
  HC_ASSIGN_OR_RETURN(Pkey key, ParseKey(key_pem, "the node key"));
  ReqPtr req(X509_REQ_new());
  X509_REQ_set_version(req.get(), 0);
  X509_NAME* n = X509_NAME_new();
  SetName(n, node_id);
  X509_REQ_set_subject_name(req.get(), n);
  X509_NAME_free(n);
  X509_REQ_set_pubkey(req.get(), key.get());
  if (X509_REQ_sign(req.get(), key.get(), EVP_sha256()) == 0)
    return Internal("cannot sign the CSR: " + SslError());
  BioPtr b(BIO_new(BIO_s_mem()));
  HC_CHECK(PEM_write_bio_X509_REQ(b.get(), req.get()) == 1, "PEM_write_bio_X509_REQ");
  return BioText(b.get());
}

Result<KeyAndCsr> CreateKeyAndCsr(const std::string& node_id) {
  HC_RETURN_IF_ERROR(ValidNodeId(node_id));
  HC_ASSIGN_OR_RETURN(Pkey key, NewP256());
  KeyAndCsr out;
  out.key_pem = KeyPem(key.get());
  HC_ASSIGN_OR_RETURN(out.csr_pem, CreateCsr(out.key_pem, node_id));
  return out;
}

Result<std::string> SignNodeCert(const CaMaterial& ca, std::string_view csr_pem,
                                 const NodeCertSpec& spec) {
  HC_RETURN_IF_ERROR(ValidNodeId(spec.node_id));
  HC_ASSIGN_OR_RETURN(X509Ptr ca_cert, ParseCert(ca.cert_pem, "the CA certificate"));
  HC_ASSIGN_OR_RETURN(Pkey ca_key, ParseKey(ca.key_pem, "the CA key"));
  if (X509_check_private_key(ca_cert.get(), ca_key.get()) != 1) {
    ERR_clear_error();
    return InvalidArgument("the CA key does not belong to the CA certificate");
  }
  auto bio = MemBio(csr_pem);
  ReqPtr req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!req) {
    ERR_clear_error();
    return InvalidArgument("the CSR is not PEM (-----BEGIN CERTIFICATE REQUEST-----)");
  }
  Pkey pub(X509_REQ_get_pubkey(req.get()));
  if (!pub || X509_REQ_verify(req.get(), pub.get()) != 1) {
    ERR_clear_error();
    return InvalidArgument("the CSR's signature does not verify (damaged or forged request)");
  }
  if (EVP_PKEY_get_base_id(pub.get()) != EVP_PKEY_EC || EVP_PKEY_get_bits(pub.get()) != 256)
    return InvalidArgument("the CSR's key must be ECDSA P-256");
  std::string san = "DNS:" + spec.node_id;
  for (const auto& a : spec.addresses) {
    unsigned char buf[16];
    if (inet_pton(AF_INET, a.c_str(), buf) == 1 || inet_pton(AF_INET6, a.c_str(), buf) == 1) {
      san += ",IP:" + a;
      continue;
    }
    // A host name (hcd's `address` may be one).
    bool name = !a.empty() && a.size() <= 253;
    for (char c : a)
      name = name && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '.');
    if (!name)
      return InvalidArgument("address '" + a + "' is neither an IP address nor a host name");
    san += ",DNS:" + a;
  }
  X509Ptr x(X509_new());
  X509_set_version(x.get(), 2);
  SetSerial(x.get());
  HC_RETURN_IF_ERROR(SetValidity(x.get(), Now(spec.now), spec.days));
  SetName(X509_get_subject_name(x.get()), spec.node_id);
  X509_set_issuer_name(x.get(), X509_get_subject_name(ca_cert.get()));
  X509_set_pubkey(x.get(), pub.get());
  X509* issuer = ca_cert.get();
  HC_RETURN_IF_ERROR(AddExt(x.get(), issuer, NID_basic_constraints, "critical,CA:FALSE"));
  HC_RETURN_IF_ERROR(AddExt(x.get(), issuer, NID_key_usage, "critical,digitalSignature"));
  HC_RETURN_IF_ERROR(AddExt(x.get(), issuer, NID_ext_key_usage, "serverAuth,clientAuth"));
  HC_RETURN_IF_ERROR(AddExt(x.get(), issuer, NID_subject_alt_name, san));
  HC_RETURN_IF_ERROR(AddExt(x.get(), issuer, NID_subject_key_identifier, "hash"));
  HC_RETURN_IF_ERROR(AddExt(x.get(), issuer, NID_authority_key_identifier, "keyid:always"));
  if (X509_sign(x.get(), ca_key.get(), EVP_sha256()) == 0)
    return Internal("cannot sign the node certificate: " + SslError());
  return CertPem(x.get());
}

Result<CertInfo> InspectCert(std::string_view cert_pem) {
  HC_ASSIGN_OR_RETURN(X509Ptr x, ParseCert(cert_pem, "the certificate"));
  return Inspect(x.get());
}

Result<Digest> CertFingerprint(std::string_view cert_pem) {
  HC_ASSIGN_OR_RETURN(CertInfo ci, InspectCert(cert_pem));
  return ci.fingerprint;
}

std::string FingerprintText(const Digest& d) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (size_t i = 0; i < d.size(); i++) {
    if (i) out += ':';
    out += kHex[d[i] >> 4];
    out += kHex[d[i] & 15];
  }
  return out;
}

Status VerifyCaCert(std::string_view ca_pem, int64_t now) {
  HC_ASSIGN_OR_RETURN(X509Ptr ca, ParseCert(ca_pem, "the CA certificate"));
  HC_ASSIGN_OR_RETURN(CertInfo ci, Inspect(ca.get()));
  if (!ci.is_ca) return PermissionDenied("'" + ci.common_name + "' is not a CA certificate");
  Pkey pub(X509_get_pubkey(ca.get()));
  if (!pub || X509_verify(ca.get(), pub.get()) != 1) {
    ERR_clear_error();
    return PermissionDenied("the CA certificate is not validly self-signed");
  }
  int64_t t = Now(now);
  if (t > ci.not_after)
    return PermissionDenied("the cluster CA '" + ci.common_name + "' expired on " +
                            Date(ci.not_after));
  if (t < ci.not_before)
    return PermissionDenied("the cluster CA is valid only from " + Date(ci.not_before) +
                            " (is this machine's clock right?)");
  return Status::Ok();
}

Status VerifyNodeCert(std::string_view ca_pem, std::string_view cert_pem,
                      const std::string& node_id, int64_t now) {
  HC_ASSIGN_OR_RETURN(X509Ptr ca, ParseCert(ca_pem, "the CA certificate"));
  HC_ASSIGN_OR_RETURN(X509Ptr cert, ParseCert(cert_pem, "the node certificate"));
  HC_ASSIGN_OR_RETURN(CertInfo ci, Inspect(cert.get()));
  StorePtr store(X509_STORE_new());
  X509_STORE_add_cert(store.get(), ca.get());
  StoreCtxPtr ctx(X509_STORE_CTX_new());
  HC_CHECK(ctx && X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr) == 1,
           "X509_STORE_CTX_init");
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  X509_VERIFY_PARAM_set_time(param, static_cast<time_t>(Now(now)));
  if (X509_verify_cert(ctx.get()) != 1) {
    int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    switch (err) {
      case X509_V_ERR_CERT_HAS_EXPIRED:
        return PermissionDenied("the certificate of '" + ci.common_name + "' expired on " +
                                Date(ci.not_after));
      case X509_V_ERR_CERT_NOT_YET_VALID:
        return PermissionDenied("the certificate of '" + ci.common_name + "' is valid only from " +
                                Date(ci.not_before) + " (is this machine's clock right?)");
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
      case X509_V_ERR_CERT_SIGNATURE_FAILURE:
      case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        return PermissionDenied("the certificate of '" + ci.common_name +
                                "' was not issued by this cluster's CA (issuer '" +
                                ci.issuer_common_name + "')");
      case X509_V_ERR_CERT_REVOKED:
      default:
        return PermissionDenied(
            "the certificate of '" + ci.common_name +
            "' does not verify against the cluster CA: " + X509_verify_cert_error_string(err));
    }
  }
  uint32_t xku = X509_get_extended_key_usage(cert.get());
  if ((xku & XKU_SSL_SERVER) == 0 || (xku & XKU_SSL_CLIENT) == 0)
    return PermissionDenied("the certificate of '" + ci.common_name +
                            "' is not for both TLS server and client use");
  if (ci.is_ca) return PermissionDenied("a CA certificate is not a node certificate");
  bool named = false;
  for (const auto& d : ci.dns_names) named |= d == node_id;
  if (ci.common_name != node_id || !named)
    return PermissionDenied("the certificate is for node '" + ci.common_name + "', not '" +
                            node_id + "'");
  return Status::Ok();
}

Status CheckKeyMatchesCert(std::string_view cert_pem, std::string_view key_pem) {
  HC_ASSIGN_OR_RETURN(X509Ptr cert, ParseCert(cert_pem, "the certificate"));
  HC_ASSIGN_OR_RETURN(Pkey key, ParseKey(key_pem, "the key"));
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return PermissionDenied("the private key does not belong to the certificate");
  }
  return Status::Ok();
}

}  // namespace hc::pki
