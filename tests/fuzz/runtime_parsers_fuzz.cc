// Parsers of the runtime that see bytes from outside: app specs (from the
// cluster state or API), supervisor settings, the HTTP status line an app
// answers a readiness probe with, and the fence file every supervisor reads.
// Must never crash; valid results must round-trip.
#include <stddef.h>
#include <stdint.h>

#include <string_view>

#include "common/status.h"
#include "runtime/app_spec.h"
#include "runtime/fence.h"
#include "runtime/probe.h"
#include "runtime/shim/launcher.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  int code = hc::runtime::ParseHttpStatusLine(in);
  HC_CHECK(code == -1 || (code >= 100 && code <= 999), "status code range");

  auto spec = hc::runtime::AppSpecFromJson(in);
  if (spec.ok()) {
    auto again = hc::runtime::AppSpecFromJson(hc::runtime::AppSpecToJson(*spec));
    HC_CHECK(again.ok(), "a valid spec round-trips");
    HC_CHECK(hc::runtime::AppSpecToJson(*again) == hc::runtime::AppSpecToJson(*spec),
             "round-trip is exact");
  }
  auto cfg = hc::runtime::shim::ShimConfigFromJson(in);
  if (cfg.ok()) {
    auto again = hc::runtime::shim::ShimConfigFromJson(hc::runtime::shim::ShimConfigToJson(*cfg));
    HC_CHECK(again.ok() && again->fence_file == cfg->fence_file, "shim.json round-trips");
  }

  auto deadline = hc::runtime::ParseFenceDeadline(in);
  if (deadline.ok()) {
    HC_CHECK(*deadline >= 0, "a fence deadline is never negative");
    auto again = hc::runtime::ParseFenceDeadline(hc::runtime::FormatFenceDeadline(*deadline));
    HC_CHECK(again.ok() && *again == *deadline, "a fence deadline round-trips");
  }
  return 0;
}
