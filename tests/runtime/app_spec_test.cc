#include "runtime/app_spec.h"

#include <gtest/gtest.h>

#include "runtime/probe.h"

namespace hc::runtime {
namespace {

AppSpec Valid() {
  AppSpec s;
  s.name = "shop";
  s.argv = {"/bin/sh", "-c", "exec server"};
  s.env = {"MODE=prod"};
  s.port = 8080;
  s.volume_path = "/srv/volumes/shop";
  s.probe.kind = ProbeKind::kHttp;
  s.probe.http_path = "/health";
  s.limits.memory_bytes = 512ull << 20;
  s.stop_signal = SIGINT;
  return s;
}

TEST(AppSpec, RoundTripsThroughJson) {
  AppSpec s = Valid();
  auto back = AppSpecFromJson(AppSpecToJson(s));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(AppSpecToJson(*back), AppSpecToJson(s));
  EXPECT_EQ(back->probe.kind, ProbeKind::kHttp);
  EXPECT_EQ(back->stop_signal, SIGINT);
}

TEST(AppSpec, RejectionsNameTheField) {
  struct Case {
    void (*mutate)(AppSpec&);
    const char* want;
  } cases[] = {
      {[](AppSpec& s) { s.name = "Bad Name"; }, "app name"},
      {[](AppSpec& s) { s.argv.clear(); }, "no command"},
      {[](AppSpec& s) { s.port = 0; }, "port"},
      {[](AppSpec& s) { s.volume_path = "relative"; }, "absolute"},
      {[](AppSpec& s) { s.env = {"NOEQUALS"}; }, "NAME=value"},
      {[](AppSpec& s) { s.limits.memory_bytes = 1024; }, "4 MiB"},
      {[](AppSpec& s) { s.limits.pids = 1; }, "process limit"},
      {[](AppSpec& s) { s.stop_signal = 0; }, "signal"},
      {[](AppSpec& s) { s.restart.max_backoff_ms = 1; }, "back-off"},
      {[](AppSpec& s) { s.probe.http_path = "/a b"; }, "probe path"},
  };
  for (const auto& c : cases) {
    AppSpec s = Valid();
    c.mutate(s);
    Status st = ValidateAppSpec(s);
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << c.want;
    EXPECT_NE(st.message().find(c.want), std::string::npos) << st.message();
  }
}

TEST(AppSpec, MalformedJsonIsInvalidArgument) {
  for (const char* text : {"", "[]", "{", R"({"name":"x"})", R"({"name":1,"argv":[],"port":1})",
                           R"({"name":"x","argv":["/a"],"port":70000,"volume_path":"/v"})",
                           R"({"name":"x","argv":["/a"],"port":1,"volume_path":"/v",
                               "probe":{"kind":"smoke"}})"}) {
    auto r = AppSpecFromJson(text);
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << text;
  }
}

TEST(AppSpec, UidIsStableAndInRange) {
  EXPECT_EQ(AppUid("shop"), AppUid("shop"));
  EXPECT_NE(AppUid("shop"), AppUid("shop2"));
  for (const char* n :
       {"a", "shop", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"}) {
    EXPECT_GE(AppUid(n), kAppUidBase);
    EXPECT_LT(AppUid(n), kAppUidBase + (1u << 20));
  }
}

// Golden cases of the probe's status-line parser (bytes from the app).
TEST(ParseHttpStatusLine, AcceptsOnlyStatusLines) {
  struct {
    const char* line;
    int code;
  } cases[] = {
      {"HTTP/1.1 200 OK", 200},
      {"HTTP/1.0 503", 503},
      {"HTTP/1.1 404 Not Found", 404},
      {"HTTP/2.0 100 Continue", 100},
      {"HTTP/1.1 099 x", -1},
      {"HTTP/1.1 20 OK", -1},
      {"HTTP/1.1 2000", -1},
      {"http/1.1 200 OK", -1},
      {"HTTP/1.1  200 OK", -1},
      {"SSH-2.0-OpenSSH", -1},
      {"", -1},
      {"HTTP/x.1 200 OK", -1},
  };
  for (const auto& c : cases) EXPECT_EQ(ParseHttpStatusLine(c.line), c.code) << c.line;
}

}  // namespace
}  // namespace hc::runtime
