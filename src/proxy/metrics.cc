#include "proxy/metrics.h"

#include <cstdio>

namespace hc::proxy {
namespace {

// Label values escape backslash, double quote and newline.
std::string Label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void Family(std::string* out, const char* name, const char* type, const char* help) {
  *out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

// One family with a sample per app.
template <typename Apps, typename Value>
void PerApp(std::string* out, const Apps& apps, const char* name, const char* type,
            const char* help, Value value) {
  Family(out, name, type, help);
  for (const auto& [app, a] : apps)
    *out += std::string(name) + "{app=\"" + Label(app) + "\"} " + std::to_string(value(a)) + "\n";
}

void Total(std::string* out, const char* name, const char* type, const char* help,
           std::string value) {
  Family(out, name, type, help);
  *out += std::string(name) + " " + value + "\n";
}

}  // namespace

std::string PrometheusText(const StreamStats& s) {
  std::string out;
  using A = StreamAppStats;
  PerApp(&out, s.apps, "hc_proxy_stream_connections_total", "counter",
         "TCP, TLS passthrough, PostgreSQL and mail connections relayed to the app.",
         [](const A& a) { return a.connections; });
  PerApp(&out, s.apps, "hc_proxy_stream_open_connections", "gauge",
         "Relayed connections of the app open now.", [](const A& a) { return a.open; });
  PerApp(&out, s.apps, "hc_proxy_stream_bytes_received_total", "counter",
         "Bytes from clients to the app.", [](const A& a) { return a.bytes_in; });
  PerApp(&out, s.apps, "hc_proxy_stream_bytes_sent_total", "counter",
         "Bytes from the app to clients.", [](const A& a) { return a.bytes_out; });
  PerApp(&out, s.apps, "hc_proxy_stream_failed_total", "counter",
         "Connections the app did not take (unreachable, refused, held too long).",
         [](const A& a) { return a.failed; });
  PerApp(&out, s.apps, "hc_proxy_stream_held_connections", "gauge",
         "Connections queued by a hold now.", [](const A& a) { return a.held; });
  Total(&out, "hc_proxy_stream_unrouted_total", "counter",
        "Connections for no known port, database, mail domain or TLS name.",
        std::to_string(s.unrouted));
  Total(&out, "hc_proxy_stream_malformed_total", "counter",
        "Connections closed for a protocol error before routing.", std::to_string(s.malformed));
  Total(&out, "hc_proxy_stream_connections_open", "gauge", "Stream connections open now.",
        std::to_string(s.open));
  return out;
}

std::string PrometheusText(const ProxyStats& s) {
  std::string out;
  auto per_app = [&](const char* name, const char* type, const char* help, auto value) {
    PerApp(&out, s.apps, name, type, help, value);
  };
  per_app("hc_proxy_requests_total", "counter", "Requests answered by the app's backend.",
          [](const AppStats& a) { return a.requests; });
  per_app("hc_proxy_bytes_received_total", "counter", "Bytes of requests from clients.",
          [](const AppStats& a) { return a.bytes_in; });
  per_app("hc_proxy_bytes_sent_total", "counter", "Bytes of responses to clients.",
          [](const AppStats& a) { return a.bytes_out; });
  per_app("hc_proxy_open_connections", "gauge", "Client connections busy with the app now.",
          [](const AppStats& a) { return a.open_connections; });
  per_app("hc_proxy_held_requests", "gauge", "Requests queued by a hold now (moves).",
          [](const AppStats& a) { return a.held; });
  per_app("hc_proxy_held_requests_total", "counter", "Requests ever queued by a hold.",
          [](const AppStats& a) { return a.held_total; });

  const char* h = "hc_proxy_request_duration_seconds";
  Family(&out, h, "histogram", "Request head complete to response sent.");
  for (const auto& [app, a] : s.apps) {
    uint64_t cumulative = 0;
    std::string l = "app=\"" + Label(app) + "\"";
    for (size_t i = 0; i < kLatencyBuckets; ++i) {
      cumulative += a.latency[i];
      char le[32];
      if (i < kLatencyBoundsMs.size())
        std::snprintf(le, sizeof le, "%g", kLatencyBoundsMs[i] / 1000.0);
      else
        std::snprintf(le, sizeof le, "+Inf");
      out += std::string(h) + "_bucket{" + l + ",le=\"" + le + "\"} " + std::to_string(cumulative) +
             "\n";
    }
    char sum[32];
    std::snprintf(sum, sizeof sum, "%.6f", a.latency_us / 1e6);
    out += std::string(h) + "_sum{" + l + "} " + sum + "\n";
    out += std::string(h) + "_count{" + l + "} " + std::to_string(cumulative) + "\n";
  }

  Family(&out, "hc_proxy_connections_accepted_total", "counter", "Client connections accepted.");
  out += "hc_proxy_connections_accepted_total " + std::to_string(s.connections_accepted) + "\n";
  Family(&out, "hc_proxy_connections_refused_total", "counter",
         "Client connections closed at once (over max_connections).");
  out += "hc_proxy_connections_refused_total " + std::to_string(s.connections_refused) + "\n";
  Family(&out, "hc_proxy_connections_open", "gauge", "Client connections open now.");
  out += "hc_proxy_connections_open " + std::to_string(s.connections_open) + "\n";
  Family(&out, "hc_proxy_error_responses_total", "counter",
         "Answers the proxy made itself (4xx and 5xx pages).");
  out += "hc_proxy_error_responses_total " + std::to_string(s.errors) + "\n";
  return out;
}

}  // namespace hc::proxy
