// The cluster state codecs see bytes from etcd and, for app definitions, from
// API clients. Must never crash; whatever parses must round-trip exactly, and
// validation must not crash on anything that parses.
#include <stddef.h>
#include <stdint.h>

#include <string_view>

#include "cluster/state.h"
#include "common/status.h"

namespace {

template <typename T, typename Parse>
void RoundTrip(std::string_view in, Parse parse) {
  hc::Result<T> first = parse(in);
  if (!first.ok()) {
    HC_CHECK(first.status().code() == hc::Code::kInvalidArgument, first.status().ToString());
    return;
  }
  std::string json = hc::cluster::ToJson(*first);
  hc::Result<T> again = parse(json);
  HC_CHECK(again.ok(), "a parsed value round-trips: " + again.status().ToString());
  HC_CHECK(hc::cluster::ToJson(*again) == json, "round-trip is exact: " + json);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  RoundTrip<hc::cluster::NodeInfo>(in, hc::cluster::NodeInfoFromJson);
  RoundTrip<hc::cluster::Placement>(in, hc::cluster::PlacementFromJson);
  RoundTrip<hc::cluster::AppObserved>(in, hc::cluster::AppObservedFromJson);
  RoundTrip<hc::cluster::AppDef>(in, hc::cluster::AppDefFromJson);
  RoundTrip<hc::cluster::JoinTokenRecord>(in, hc::cluster::JoinTokenRecordFromJson);
  RoundTrip<hc::cluster::MoveRecord>(in, hc::cluster::MoveRecordFromJson);
  if (auto node = hc::cluster::NodeInfoFromJson(in); node.ok()) {
    (void)hc::cluster::ValidateNodeId(node->id);
  }
  auto app = hc::cluster::AppDefFromJson(in);
  if (app.ok()) {
    hc::Status st = hc::cluster::ValidateAppDef(*app);
    HC_CHECK(st.ok() || st.code() == hc::Code::kInvalidArgument, st.ToString());
    for (const std::string& d : app->domains) (void)hc::cluster::ValidateDomain(d);
  }
  return 0;
}
