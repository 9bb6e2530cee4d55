// The Prometheus text of the proxy's counters.
#include "proxy/metrics.h"

#include <gtest/gtest.h>

namespace hc::proxy {
namespace {

TEST(ProxyMetrics, PerAppCountersAndACumulativeHistogram) {
  ProxyStats s;
  AppStats& a = s.apps["shop"];
  a.requests = 3;
  a.bytes_in = 300;
  a.bytes_out = 9000;
  a.open_connections = 1;
  a.latency[0] = 2;  // <= 1 ms
  a.latency[2] = 1;  // <= 5 ms
  a.latency_us = 4500;
  s.apps["we\"ird"].requests = 1;
  s.connections_accepted = 7;
  std::string t = PrometheusText(s);
  EXPECT_NE(t.find("# TYPE hc_proxy_requests_total counter\n"), std::string::npos) << t;
  EXPECT_NE(t.find("hc_proxy_requests_total{app=\"shop\"} 3\n"), std::string::npos) << t;
  EXPECT_NE(t.find("hc_proxy_requests_total{app=\"we\\\"ird\"} 1\n"), std::string::npos) << t;
  EXPECT_NE(t.find("hc_proxy_bytes_sent_total{app=\"shop\"} 9000\n"), std::string::npos);
  EXPECT_NE(t.find("hc_proxy_request_duration_seconds_bucket{app=\"shop\",le=\"0.001\"} 2\n"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("hc_proxy_request_duration_seconds_bucket{app=\"shop\",le=\"0.005\"} 3\n"),
            std::string::npos);
  EXPECT_NE(t.find("hc_proxy_request_duration_seconds_bucket{app=\"shop\",le=\"+Inf\"} 3\n"),
            std::string::npos);
  EXPECT_NE(t.find("hc_proxy_request_duration_seconds_sum{app=\"shop\"} 0.004500\n"),
            std::string::npos);
  EXPECT_NE(t.find("hc_proxy_request_duration_seconds_count{app=\"shop\"} 3\n"), std::string::npos);
  EXPECT_NE(t.find("hc_proxy_connections_accepted_total 7\n"), std::string::npos);
}

}  // namespace
}  // namespace hc::proxy
