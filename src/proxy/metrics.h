// The proxy's per-app counters in the Prometheus text format (version
// 0.0.4), for GET /metrics on every node; the scheduler will read the same
// figures for auto-scaling.
#pragma once

#include <string>

#include "proxy/http_proxy.h"
#include "proxy/stream_proxy.h"

namespace hc::proxy {

// hc_proxy_requests_total, hc_proxy_bytes_received_total,
// hc_proxy_bytes_sent_total, hc_proxy_open_connections, hc_proxy_held_requests,
// hc_proxy_held_requests_total (per app, label app="..."), the
// hc_proxy_request_duration_seconds histogram per app, and the totals
// hc_proxy_connections_accepted_total, hc_proxy_connections_refused_total,
// hc_proxy_connections_open, hc_proxy_error_responses_total.
std::string PrometheusText(const ProxyStats& stats);
// hc_proxy_stream_* families: per app connections, open connections, bytes
// each way, failures, held connections; totals of unrouted, malformed and
// open connections.
std::string PrometheusText(const StreamStats& stats);

}  // namespace hc::proxy
