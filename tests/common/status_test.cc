#include "common/status.h"

#include <gtest/gtest.h>

#include "common/hash.h"

namespace hc {
namespace {

Result<int> Half(int x) {
  if (x % 2) return InvalidArgument(std::to_string(x) + " is odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  HC_ASSIGN_OR_RETURN(int h, Half(x));
  return Half(h);
}

TEST(Status, CarriesCodeAndActionableMessage) {
  Status s = NotFound("volume 'shop' does not exist");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.ToString(), "not found: volume 'shop' does not exist");
  EXPECT_EQ(s.Annotate("rollback").message(), "rollback: volume 'shop' does not exist");
  EXPECT_TRUE(Status::Ok().ok());
}

TEST(Result, PropagatesErrorsThroughMacros) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(Quarter(6).status().message(), "3 is odd");
}

TEST(Hash, Sha256OfKnownInput) {
  std::string abc = "abc";
  EXPECT_EQ(ToHex(Sha256Of({reinterpret_cast<const uint8_t*>(abc.data()), abc.size()})),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Digest d;
  EXPECT_TRUE(FromHex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", &d));
  EXPECT_FALSE(FromHex("zz", &d));
}

}  // namespace
}  // namespace hc
