// pickle::Repr and pickle::Value's checked accessors.
#include "core/storage/dcp/pickle.h"

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "core/base/error.h"
#include "core/storage/dcp/pickle_test_data.h"
#include "core/testing/errors.h"

namespace dcpp {
namespace pickle {
namespace {

using ::dcpp::testing::ErrorOf;

// ------------------------------------------------------------------------ Repr, Value

TEST(PickleRepr, PythonLike) {
  EXPECT_EQ(R(Value::None()), "None");
  EXPECT_EQ(R(Value::Bool(true)), "True");
  EXPECT_EQ(R(I(-7)), "-7");
  const std::vector<std::pair<double, std::string>> floats = {
      {1.5, "1.5"}, {0.1, "0.1"}, {1e300, "1e+300"}, {1e16, "1e+16"},
      {1234567890123456.0, "1234567890123456.0"}, {1e-5, "1e-05"}, {0.0001, "0.0001"},
      {-0.0, "-0.0"}, {0.0, "0.0"}, {HUGE_VAL, "inf"}, {-HUGE_VAL, "-inf"}, {std::nan(""), "nan"},
      {5e-324, "5e-324"}, {123.456, "123.456"}, {100.0, "100.0"}, {1.7976931348623157e308,
      "1.7976931348623157e+308"}};
  for (const auto& [f, text] : floats) EXPECT_EQ(R(Value::Float(f)), text);
  EXPECT_EQ(R(S("it's")), "\"it's\"");
  EXPECT_EQ(R(S("a'b\"c")), "'a\\'b\"c'");
  EXPECT_EQ(R(S("\n\t\x01\\ \u00e9")), "'\\n\\t\\x01\\\\ \u00e9'");
  EXPECT_EQ(R(Value::Bytes("\0\xff'"s)), "b\"\\x00\\xff'\"");
  EXPECT_EQ(R(Value::Bytes(std::string(100, 'z'))),
            "b'" + std::string(32, 'z') + "'...(100 bytes)");
  EXPECT_EQ(R(Value::Tuple({I(1)})), "(1,)");
  EXPECT_EQ(R(Value::Tuple({})), "()");
  EXPECT_EQ(R(Value::List({I(1), S("a")})), "[1, 'a']");
  EXPECT_EQ(R(Value::Dict({{S("k"), I(1)}})), "{'k': 1}");
  EXPECT_EQ(R(SetOf({})), "set()");
  EXPECT_EQ(R(SetOf({I(1), I(2)})), "{1, 2}");
  EXPECT_EQ(R(Value::Global("torch", "Size")), "torch.Size");
  EXPECT_EQ(R(Obj(Value::Global("m", "C"), {I(1)}, Value::Tuple({I(2)}))), "m.C(1, state=(2,))");
  EXPECT_EQ(R(Persistent(Value::Tuple({S("storage")}))), "persistent_id(('storage',))");
  std::vector<ValuePtr> hundred;
  for (int i = 0; i < 100; ++i) hundred.push_back(I(i));
  EXPECT_EQ(Repr(*Value::List(hundred), 20), "[0, 1, 2, 3, 4, 5...");
  // Cut at a character boundary, never inside UTF-8.
  const ValuePtr e = S("\u00e9\u00e9\u00e9\u00e9\u00e9");
  for (size_t n = 0; n <= 14; ++n) {
    const std::string r = Repr(*e, n);
    EXPECT_LE(r.size(), n);
    EXPECT_EQ(Decode(Writer().Str(r).Finish(), nullptr, "utf8")->str, r);  // valid UTF-8
  }
  EXPECT_EQ(Repr(*e, 6), "'\u00e9...");
}

TEST(PickleValue, CheckedAccessors) {
  EXPECT_EQ(Value::Bool(true)->AsInt("flag"), 1);
  EXPECT_HAS(ErrorOf([] { S("x")->AsInt("the step"); }),
             "pickle: the step is a str, expected an int");
  EXPECT_HAS(ErrorOf([] { I(1)->AsStr("the name"); }), "the name is a int, expected a str");
  EXPECT_HAS(ErrorOf([] { Value::Dict({})->AsSeq("the size"); }),
             "the size is a dict, expected a tuple or list");
  EXPECT_HAS(ErrorOf([] { Value::List({})->Get("k"); }), "looking up 'k' in a list");
  const ValuePtr d = Value::Dict({{S("k"), I(1)}, {I(5), I(2)}, {S("k"), I(3)}});
  EXPECT_EQ(d->Get("k")->AsInt("k"), 3);  // a repeated key: the last, as Python's dict
  EXPECT_EQ(d->Get("5"), nullptr);
  EXPECT_EQ(I(1)->Attr("x"), nullptr);
  EXPECT_EQ(Obj(Value::Global("m", "C"), {})->Attr("x"), nullptr);  // no state
  const ValuePtr o = Obj(Value::Global("m", "C"), {}, Value::Dict({{S("x"), I(4)}}));
  EXPECT_EQ(o->Attr("x")->AsInt("x"), 4);
  EXPECT_TRUE(o->IsObjectOf("m", "C"));
  EXPECT_FALSE(o->IsObjectOf("m", "D"));
  EXPECT_FALSE(o->IsGlobal("m", "C"));
  EXPECT_TRUE(o->cls->IsGlobal("m", "C"));
  EXPECT_STREQ(KindName(K::kPersistent), "persistent id");
}

}  // namespace
}  // namespace pickle
}  // namespace dcpp
