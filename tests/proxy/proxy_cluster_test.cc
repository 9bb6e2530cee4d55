// The proxy in a real cluster: three real hcd (each with its public proxy,
// its stream proxy and its mutual-TLS node channel) and a real etcd; apps
// created through the REST API; real clients (curl, psql, Python's imaplib,
// the websocket-client library) through one node to an app on another.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "cluster/local_cluster_test.h"
#include "common/subprocess.h"

namespace hc {
namespace {

using testing::json;

constexpr uint16_t kProxyPort = 10080;
constexpr uint16_t kTlsPort = 10443;
constexpr uint16_t kPostgresPort = 15432;
constexpr uint16_t kImapPort = 10143;
constexpr uint16_t kPop3Port = 10110;

std::string NodeIp(int k) {
  return "127.0.0.6" + std::to_string(k);
}

// The node (1-3) an app's placement names as primary.
int PrimaryOf(const json& app) {
  return std::atoi(app["placement"].value("primary", "node0").c_str() + 4);
}

// A node other than k.
int Other(int k) {
  return k % 3 + 1;
}

// curl through node k's proxy with a Host header: "<status> <body>".
std::string Get(int k, const std::string& host, const std::string& path = "/") {
  auto r = RunCommand(
      {"curl", "-s", "--max-time", "5", "-H", "Host: " + host, "-w", "\n%{http_code}",
       "http://127.0.0.6" + std::to_string(k) + ":" + std::to_string(kProxyPort) + path});
  if (!r.ok()) return "curl failed";
  std::string out = r->out;
  size_t nl = out.rfind('\n');
  return out.substr(nl + 1) + " " + out.substr(0, nl);
}

class ProxyClusterTest : public testing::LocalClusterTest {
 protected:
  static void SetUpTestSuite() {
    if (!testing::HaveProgram("curl")) {
      skip_ = "curl not installed";
      return;
    }
    devcluster::LocalClusterOptions o;
    o.nodes = 3;
    o.first_octet = 60;  // etcd 127.0.0.60, nodes .61-.63
    o.etcd_client_port = 23794;
    o.etcd_peer_port = 23804;
    o.api_port = 7483;
    o.lease_ttl_seconds = 3;
    o.reconcile_interval_ms = 1000;
    o.proxy_port = kProxyPort;
    if (std::getenv("HC_TEST_DEBUG") != nullptr) o.log_level = "debug";
    o.proxy_tls_port = kTlsPort;
    o.proxy_postgres_port = kPostgresPort;
    o.proxy_imap_port = kImapPort;
    o.proxy_pop3_port = kPop3Port;
    StartCluster(o);
  }

  // curl to node k's node channel (7482) as a node would: with node `as`'s
  // certificate (0 = none). "<http code>" or "" when TLS refused us.
  static std::string Channel(int k, int as, const std::string& host, const std::string& ca = "") {
    std::vector<std::string> argv = {"curl",      "-s",           "-o",           "/dev/null",
                                     "-w",        "%{http_code}", "--max-time",   "5",
                                     "--no-alpn", "-H",           "Host: " + host};
    std::string pki = as > 0 ? cluster_->NodeDataDir(as) + "/pki/" : "";
    argv.insert(argv.end(),
                {"--cacert", ca.empty() ? cluster_->NodeDataDir(1) + "/pki/ca.crt" : ca});
    if (as > 0) argv.insert(argv.end(), {"--cert", pki + "node.crt", "--key", pki + "node.key"});
    // The node's certificate names its id; curl checks it against the URL's
    // host, so reach the address under that name.
    argv.insert(argv.end(), {"--resolve", "node" + std::to_string(k) + ":7482:" + NodeIp(k),
                             "https://node" + std::to_string(k) + ":7482/"});
    auto c = RunCommand(argv);
    return c.ok() && c->exit_code == 0 ? c->out : "";
  }
};

TEST_F(ProxyClusterTest, EveryNodeServesTheAppByItsDomainAndItsAlias) {
  json app = CreateAndWait(1, "site",
                           {{"replicas", 0},
                            {"domains", {"site.example.com", "*.shop.example.com"}},
                            {"aliases", {"www.site.example.com"}}});
  std::string primary = app["placement"].value("primary", "");
  ASSERT_FALSE(primary.empty()) << app.dump(2);
  // Every node, whether it runs the app or not, serves it by name.
  for (int k = 1; k <= 3; k++) {
    SCOPED_TRACE("through node " + std::to_string(k) + " (primary " + primary + ")");
    for (const char* host :
         {"site.example.com", "WWW.Site.Example.com:10080", "a.shop.example.com"}) {
      std::string r;
      ASSERT_TRUE(WaitFor([&] { return (r = Get(k, host)).starts_with("200 "); }, 5000)) << r;
      EXPECT_NE(r.find("<title>site</title>"), std::string::npos) << r;
    }
    EXPECT_TRUE(Get(k, "unknown.example.com").starts_with("404 "));
    // Each node's /metrics counts what its public proxy answered for the app.
    auto m = RunCommand({"curl", "-s", "--max-time", "5", cluster_->ApiUrl(k) + "/metrics"});
    ASSERT_TRUE(m.ok());
    EXPECT_NE(m->out.find("hc_proxy_requests_total{app=\"site\"} "), std::string::npos) << m->out;
    EXPECT_NE(m->out.find("hc_proxy_request_duration_seconds_count{app=\"site\"} "),
              std::string::npos);
  }
  // Deleted: every node stops serving it.
  ASSERT_EQ(Call(2, "DELETE", "/v1/apps/site").first, 200);
  for (int k = 1; k <= 3; k++)
    EXPECT_TRUE(WaitFor([&] { return Get(k, "site.example.com").starts_with("404 "); }, 5000))
        << Get(k, "site.example.com");
}

TEST_F(ProxyClusterTest, NodeChannelServesOnlyItsOwnAppsAndOnlyToNodesOfTheCluster) {
  json app = CreateAndWait(2, "local", {{"replicas", 0}, {"domains", {"local.example.com"}}});
  int primary = PrimaryOf(app);
  ASSERT_GE(primary, 1);
  for (int k = 1; k <= 3; k++) {
    // With another node's certificate: only the primary has the app.
    std::string r;
    bool ok = WaitFor(
        [&] {
          return (r = Channel(k, Other(k), "local.example.com")) == (k == primary ? "200" : "404");
        },
        5000);
    EXPECT_TRUE(ok) << "node " << k << " (primary node" << primary << "): " << r;
    // Without a certificate, the handshake is refused.
    EXPECT_EQ(Channel(k, 0, "local.example.com"), "") << "node " << k;
  }
  // A certificate from another CA is refused too.
  char tmpl[] = "/tmp/hc-foreign-ca.XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string d = tmpl;
  auto sh = RunCommand(
      {"sh", "-c",
       "cd " + d +
           " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "
           "ca.key "
           "-out ca.crt -days 1 -subj /CN=foreign >/dev/null 2>&1"
           " && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout node.key "
           "-out node.csr -subj /CN=node9 >/dev/null 2>&1"
           " && openssl x509 -req -in node.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 "
           "-out node.crt >/dev/null 2>&1"});
  ASSERT_TRUE(sh.ok() && sh->exit_code == 0);
  auto c = RunCommand({"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                       "--no-alpn", "--cacert", cluster_->NodeDataDir(1) + "/pki/ca.crt", "--cert",
                       d + "/node.crt", "--key", d + "/node.key", "--resolve",
                       "node" + std::to_string(primary) + ":7482:" + NodeIp(primary),
                       "https://node" + std::to_string(primary) + ":7482/"});
  ASSERT_TRUE(c.ok());
  EXPECT_NE(c->exit_code, 0) << "a foreign certificate got " << c->out;
  (void)RunCommand({"rm", "-rf", d});
  ASSERT_EQ(Call(1, "DELETE", "/v1/apps/local").first, 200);
}

TEST_F(ProxyClusterTest, PsqlReachesAPostgresAppOnAnotherNodeByDatabaseName) {
  if (!testing::HaveProgram("psql")) GTEST_SKIP() << "skipped: psql not installed";
  json app = CreateAndWait(
      1, "pgshop",
      {{"template", "postgres"}, {"replicas", 0}, {"limits", {{"memory_bytes", 256 << 20}}}});
  int primary = PrimaryOf(app);
  ASSERT_GE(primary, 1) << app.dump(2);
  // The template writes the superuser's password on its first run.
  Result<CommandResult> pw = Internal("not read");
  WaitFor(
      [&] {
        pw = RunCommand({"sh", "-c",
                         "cat $(find " + cluster_->NodeDataDir(primary) +
                             " -name postgres-password -path '*pgshop*' | head -1) 2>/dev/null"});
        return pw.ok() && !pw->out.empty();
      },
      30000);
  ASSERT_TRUE(pw.ok() && !pw->out.empty()) << "no postgres-password under node " << primary;
  std::string password = pw->out.substr(0, pw->out.find_last_not_of("\n") + 1);
  int via = Other(primary);
  std::string r;
  bool ok = WaitFor(
      [&] {
        auto c = RunCommand({"env", "PGPASSWORD=" + password, "PGCONNECT_TIMEOUT=5", "psql",
                             "host=" + NodeIp(via) + " port=" + std::to_string(kPostgresPort) +
                                 " dbname=pgshop user=postgres sslmode=prefer",
                             "-tAc", "select current_database() || ' ' || 6*7"});
        r = c.ok() ? c->out + c->err : "psql failed";
        return r == "pgshop 42\n";
      },
      20000);
  EXPECT_TRUE(ok) << "through node " << via << " to node " << primary << ": " << r << Logs();
  // A database no app has: the proxy answers in PostgreSQL's words.
  auto c = RunCommand({"env", "PGCONNECT_TIMEOUT=5", "psql",
                       "host=" + NodeIp(via) + " port=" + std::to_string(kPostgresPort) +
                           " dbname=nothere user=postgres",
                       "-tAc", "select 1"});
  ASSERT_TRUE(c.ok());
  EXPECT_NE(c->err.find("nothere"), std::string::npos) << c->err;
  ASSERT_EQ(Call(1, "DELETE", "/v1/apps/pgshop").first, 200);
}

// A small IMAP server (Python, run as a "command" app): greets, accepts
// alice@mail.example.com / s3cret, answers SELECT with "7 EXISTS".
constexpr const char* kImapServer = R"PY(
import os, socket, threading
def serve(c):
    f = c.makefile('rwb')
    f.write(b'* OK test IMAP ready\r\n'); f.flush()
    for line in f:
        parts = line.decode().split()
        if len(parts) < 2: continue
        tag, cmd = parts[0], parts[1].upper()
        if cmd == 'LOGIN':
            ok = 'alice@mail.example.com' in line.decode() and 's3cret' in line.decode()
            f.write((tag + (' OK logged in' if ok else ' NO bad login') + '\r\n').encode())
        elif cmd == 'SELECT':
            f.write(('* 7 EXISTS\r\n' + tag + ' OK [READ-WRITE] done\r\n').encode())
        elif cmd == 'CAPABILITY':
            f.write(('* CAPABILITY IMAP4rev1\r\n' + tag + ' OK\r\n').encode())
        elif cmd == 'LOGOUT':
            f.write(('* BYE\r\n' + tag + ' OK\r\n').encode()); f.flush(); break
        else:
            f.write((tag + ' BAD\r\n').encode())
        f.flush()
    c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen(16)
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
)PY";

// A WebSocket echo server (Debian's python3-websockets), as a "command" app.
constexpr const char* kWebSocketServer = R"PY(
import asyncio, os, websockets
async def echo(ws, path=None):
    async for m in ws:
        await ws.send('echo:' + m)
async def main():
    async with websockets.serve(echo, '127.0.0.1', int(os.environ['PORT'])):
        await asyncio.Future()
asyncio.run(main())
)PY";

// A "command" app running a Python program given as text.
json PythonApp(const std::string& program) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string b64;
  for (size_t i = 0; i < program.size(); i += 3) {
    uint32_t v = static_cast<uint8_t>(program[i]) << 16;
    if (i + 1 < program.size()) v |= static_cast<uint8_t>(program[i + 1]) << 8;
    if (i + 2 < program.size()) v |= static_cast<uint8_t>(program[i + 2]);
    for (size_t k = 0; k < 4; ++k)
      b64 += i + k <= program.size() ? kAlphabet[(v >> (18 - 6 * k)) & 63] : '=';
  }
  return {{"template", "command"},
          {"replicas", 0},
          {"command",
           "exec /usr/bin/python3 -c \"import "
           "base64,os;exec(base64.b64decode(os.environ['PROGRAM']))\""},
          {"env", {"PROGRAM=" + b64}}};
}

TEST_F(ProxyClusterTest, ImapClientLogsInThroughAnotherNodeByTheLoginsDomain) {
  if (!testing::HaveProgram("python3")) GTEST_SKIP() << "skipped: python3 not installed";
  json spec = PythonApp(kImapServer);
  spec["protocol"] = "imap";
  spec["domains"] = {"mail.example.com"};
  json app = CreateAndWait(1, "mailbox", spec);
  int primary = PrimaryOf(app);
  ASSERT_GE(primary, 1) << app.dump(2);
  int via = Other(primary);
  std::string script =
      "import imaplib,sys\n"
      "m=imaplib.IMAP4(sys.argv[1],int(sys.argv[2]))\n"
      "m.login('alice@mail.example.com','s3cret')\n"
      "typ,data=m.select('INBOX')\n"
      "print(typ,data[0].decode())\n"
      "m.logout()\n";
  std::string r;
  bool ok = WaitFor(
      [&] {
        auto c = RunCommand({"python3", "-c", script, NodeIp(via), std::to_string(kImapPort)});
        r = c.ok() ? c->out + c->err : "python failed";
        return r == "OK 7\n";
      },
      10000);
  EXPECT_TRUE(ok) << "through node " << via << " to node " << primary << ": " << r << Logs();
  ASSERT_EQ(Call(1, "DELETE", "/v1/apps/mailbox").first, 200);
}

TEST_F(ProxyClusterTest, WebSocketClientTalksThroughAnotherNode) {
  auto probe = RunCommand({"/usr/bin/python3", "-c", "import websocket, websockets"});
  if (!probe.ok() || probe->exit_code != 0)
    GTEST_SKIP() << "skipped: python3-websocket and python3-websockets not installed";
  json spec = PythonApp(kWebSocketServer);
  spec["domains"] = {"ws.example.com"};
  json app = CreateAndWait(1, "wsecho", spec);
  int primary = PrimaryOf(app);
  ASSERT_GE(primary, 1) << app.dump(2);
  int via = Other(primary);
  std::string script =
      "import sys, websocket\n"
      "ws = websocket.create_connection('ws://' + sys.argv[1] + '/chat', "
      "host='ws.example.com', timeout=5)\n"
      "for m in ('one', 'two'):\n"
      "    ws.send(m); print(ws.recv())\n"
      "ws.close()\n";
  std::string r;
  bool ok = WaitFor(
      [&] {
        auto c = RunCommand(
            {"/usr/bin/python3", "-c", script, NodeIp(via) + ":" + std::to_string(kProxyPort)});
        r = c.ok() ? c->out + c->err : "python failed";
        return r == "echo:one\necho:two\n";
      },
      10000);
  EXPECT_TRUE(ok) << "through node " << via << " to node " << primary << ": " << r << Logs();
  ASSERT_EQ(Call(1, "DELETE", "/v1/apps/wsecho").first, 200);
}

TEST_F(ProxyClusterTest, TlsIsTerminatedWithTheAppsCertificateOnEveryNode) {
  json app = CreateAndWait(2, "tlsite", {{"replicas", 0}, {"domains", {"tls.example.com"}}});
  char tmpl[] = "/tmp/hc-app-cert.XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string d = tmpl;
  auto gen =
      RunCommand({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                  "-nodes", "-keyout", d + "/k.pem", "-out", d + "/c.pem", "-days", "1", "-subj",
                  "/CN=tls.example.com", "-addext", "subjectAltName=DNS:tls.example.com"});
  ASSERT_TRUE(gen.ok() && gen->exit_code == 0);
  auto cert = RunCommand({"cat", d + "/c.pem"});
  auto key = RunCommand({"cat", d + "/k.pem"});
  auto [st, j] = Call(1, "PUT", "/v1/apps/tlsite/certificate",
                      json{{"cert_pem", cert->out}, {"key_pem", key->out}}.dump());
  ASSERT_EQ(st, 200) << j.dump();
  // A key that does not match is refused with a reason.
  auto bad = Call(1, "PUT", "/v1/apps/tlsite/certificate",
                  json{{"cert_pem", cert->out}, {"key_pem", "junk"}}.dump());
  EXPECT_EQ(bad.first, 400) << bad.second.dump();
  for (int k = 1; k <= 3; k++) {
    std::string r;
    bool ok = WaitFor(
        [&] {
          auto c =
              RunCommand({"curl", "-s", "--max-time", "5", "--cacert", d + "/c.pem", "--resolve",
                          "tls.example.com:" + std::to_string(kTlsPort) + ":" + NodeIp(k),
                          "https://tls.example.com:" + std::to_string(kTlsPort) + "/"});
          r = c.ok() ? c->out : "curl failed";
          return r.find("<title>tlsite</title>") != std::string::npos;
        },
        5000);
    EXPECT_TRUE(ok) << "node " << k << ": " << r;
  }
  (void)RunCommand({"rm", "-rf", d});
  ASSERT_EQ(Call(1, "DELETE", "/v1/apps/tlsite").first, 200);
}

TEST_F(ProxyClusterTest, HoldThroughTheApiQueuesRequestsAndReleaseServesThemAll) {
  json app = CreateAndWait(1, "held", {{"replicas", 0}, {"domains", {"held.example.com"}}});
  auto [st, j] = Call(2, "POST", "/v1/apps/held/hold", R"({"seconds": 30})");
  ASSERT_EQ(st, 200) << j.dump();
  // Wait until every node holds it (its metrics say so once a request waits).
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < 12; i++) {
    clients.emplace_back([&, i] {
      if (Get(i % 3 + 1, "held.example.com").starts_with("200 ")) ++ok;
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  EXPECT_EQ(ok.load(), 0) << "requests were answered during the hold";
  ASSERT_EQ(Call(3, "DELETE", "/v1/apps/held/hold").first, 200);
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), 12);
  ASSERT_EQ(Call(1, "DELETE", "/v1/apps/held").first, 200);
}

}  // namespace
}  // namespace hc
