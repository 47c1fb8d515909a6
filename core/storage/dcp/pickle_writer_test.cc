// pickle::Writer: byte for byte what CPython's pickler writes (less the memo), batches,
// opcodes by protocol, round trips of every kind, refusals.
#include "core/storage/dcp/pickle.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/base/error.h"
#include "core/storage/dcp/pickle_test_data.h"
#include "core/testing/errors.h"

namespace dcpp {
namespace pickle {
namespace {

using ::dcpp::testing::ErrorOf;

// ------------------------------------------------------------------------------ Writer

ValuePtr TorchSaveTree() {
  auto storage = Persistent(Value::Tuple({S("storage"), Value::Global("torch", "FloatStorage"),
                                          S("0"), S("cpu"), I(6)}));
  auto hooks = Obj(Value::Global("collections", "OrderedDict"), {});
  auto w = Obj(Value::Global("torch._utils", "_rebuild_tensor_v2"),
               {storage, I(0), Value::Tuple({I(2), I(3)}), Value::Tuple({I(3), I(1)}),
                Value::Bool(false), hooks});
  return Value::Dict({{S("w"), w}});
}

TEST(PickleWriter, PutWritesWhatCPythonWrites) {
  const ValuePtr mixed = Value::Tuple({I(1), S("a"), Value::Bytes("\0\xff"s),
                                       Value::List({Value::Float(1.5)}),
                                       Value::Dict({{S("k"), Value::None()}})});
  EXPECT_EQ(Writer(2).Put(*mixed).Finish(), kMixed2);
  EXPECT_EQ(Writer(3).Put(*mixed).Finish(), kMixed3);

  std::vector<ValuePtr> ints;
  for (int64_t v : {int64_t{0}, int64_t{255}, int64_t{256}, int64_t{65535}, int64_t{65536},
                    int64_t{-1}, int64_t{INT32_MAX}, int64_t{INT32_MIN}, int64_t{1} << 31,
                    -(int64_t{1} << 31) - 1, std::numeric_limits<int64_t>::max(),
                    std::numeric_limits<int64_t>::min(), int64_t{1} << 40}) {
    ints.push_back(I(v));
  }
  EXPECT_EQ(Writer(2).Put(*Value::List(ints)).Finish(), kInts2);

  auto containers = [](bool p3) {
    return Value::Tuple({SetOf({I(1)}), Value::Bytes(p3 ? "" : "\x01"), Value::List({}),
                         Value::Dict({}), Value::List({Value::Bool(true)}),
                         Value::Dict({{S("a"), I(1)},
                                      {S("b"), Value::Tuple({I(1), I(2), I(3), I(4)})}}),
                         S(std::string(p3 ? 3 : 300, 'x')),
                         p3 ? Value::Bytes(std::string(300, 'y')) : Value::Float(-0.0),
                         p3 ? Value::Bytes("zzz") : Value::Float(HUGE_VAL)});
  };
  EXPECT_EQ(Writer(2).Put(*containers(false)).Finish(), kContainers2);
  EXPECT_EQ(Writer(3).Put(*containers(true)).Finish(), kContainers3);

  EXPECT_EQ(Writer(2).Put(*TorchSaveTree()).Finish(), kTorchSaveDict);
}

TEST(PickleWriter, OpcodeByOpcodeAsTorchSaveWritesIt) {
  Writer w(2);
  w.EmptyDict().Str("w").Global("torch._utils", "_rebuild_tensor_v2").Mark();
  w.Mark().Str("storage").Global("torch", "FloatStorage").Str("0").Str("cpu").Int(6).Tuple();
  w.BinPersId().Int(0).Int(2).Int(3).Tuple(2).Int(3).Int(1).Tuple(2).Bool(false);
  w.Global("collections", "OrderedDict").Tuple(0).Reduce().Tuple().Reduce().SetItem();
  EXPECT_EQ(w.Finish(), kTorchSaveDict);
  EXPECT_EQ(w.Finish(), "."s);  // the writer starts over empty (no PROTO)
}

TEST(PickleWriter, BatchesOfAThousandAsCPython) {
  // The opcodes pickle.dumps(x, 2) writes (checked against CPython 3.11 with pickletools):
  // a list of 1001: MARK 1000 APPENDS MARK 1 APPENDS; a dict of 1000: MARK 1000 SETITEMS
  // MARK SETITEMS (an empty last batch); an OrderedDict of 1001: ... SETITEMS, then SETITEM.
  auto body = [](const std::string& finished) { return finished.substr(2, finished.size() - 3); };
  std::vector<ValuePtr> list;
  std::vector<std::pair<ValuePtr, ValuePtr>> pairs;
  for (int i = 0; i < 1001; ++i) list.push_back(I(i)), pairs.emplace_back(I(i), Value::None());
  std::string nums, kv;
  for (int i = 0; i < 1000; ++i) {
    nums += body(Writer(2).Int(i).Finish());
    kv += body(Writer(2).Int(i).None().Finish());
  }
  const std::string n1000 = body(Writer(2).Int(1000).Finish());
  EXPECT_EQ(Writer(2).Put(*Value::List(list)).Finish(),
            "\x80\x02](" + nums + "e(" + n1000 + "e.");
  auto first1000 = pairs;
  first1000.pop_back();
  EXPECT_EQ(Writer(2).Put(*Value::Dict(first1000)).Finish(), "\x80\x02}(" + kv + "u(u.");
  EXPECT_EQ(Writer(2).Put(*Value::Dict(pairs)).Finish(),
            "\x80\x02}(" + kv + "u(" + n1000 + "Nu.");
  auto od = Obj(Value::Global("collections", "OrderedDict"), {});
  od->dict = pairs;
  EXPECT_EQ(Writer(2).Put(*od).Finish(),
            "\x80\x02" "ccollections\nOrderedDict\n)R(" + kv + "u" + n1000 + "Ns.");
  std::vector<ValuePtr> first1000_items(list.begin(), list.end() - 1);
  EXPECT_EQ(Writer(4).Put(*SetOf(first1000_items)).Finish(),
            "\x80\x04\x8f(" + nums + "\x90(\x90.");
  EXPECT_EQ(Writer(4).Put(*SetOf({I(1)})).Finish(), "\x80\x04\x8f(K\x01\x90."s);
  EXPECT_EQ(Writer(4).Put(*SetOf({})).Finish(), "\x80\x04\x8f."s);
  EXPECT_EQ(Writer(2).Put(*Value::List({I(7)})).Finish(), "\x80\x02]K\x07" "a."s);
}

TEST(PickleWriter, IntOpcodes) {
  const std::vector<std::pair<int64_t, std::string>> cases = {
      {0, "K\0"s},
      {255, "K\xff"s},
      {256, "M\0\1"s},
      {65535, "M\xff\xff"s},
      {65536, "J\0\0\1\0"s},
      {-1, "J\xff\xff\xff\xff"s},
      {INT32_MIN, "J\0\0\0\x80"s},
      {int64_t{1} << 31, "\x8a\x05\0\0\0\x80\0"s},
      {-(int64_t{1} << 31) - 1, "\x8a\x05\xff\xff\xff\x7f\xff"s},
      {-(int64_t{1} << 32), "\x8a\x05\0\0\0\0\xff"s},
      {std::numeric_limits<int64_t>::min(), "\x8a\x08\0\0\0\0\0\0\0\x80"s},
  };
  for (const auto& [v, ops] : cases) {
    EXPECT_EQ(Writer(2).Int(v).Finish(), "\x80\x02"s + ops + ".") << v;
  }
  // Every power of two and its neighbours round-trip, in every protocol.
  for (int p = 2; p <= 5; ++p) {
    for (int s = 0; s < 63; ++s) {
      const int64_t b = int64_t{1} << s;
      for (int64_t v : {b, b - 1, b + 1, -b, -b + 1, -b - 1}) {
        EXPECT_EQ(Decode(Writer(p).Int(v).Finish(), nullptr, "int")->AsInt("v"), v);
      }
    }
    for (int64_t v : {std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min()}) {
      EXPECT_EQ(Decode(Writer(p).Int(v).Finish(), nullptr, "int")->AsInt("v"), v);
    }
  }
}

TEST(PickleWriter, StrAndBytesOpcodesByProtocol) {
  EXPECT_EQ(Writer(2).Str("ab").Finish(), "\x80\x02X\x02\0\0\0ab."s);
  EXPECT_EQ(Writer(4).Str("ab").Finish(), "\x80\x04\x8c\x02" "ab."s);
  EXPECT_EQ(Writer(4).Str(std::string(256, 'a')).Finish().substr(0, 7), "\x80\x04X\0\1\0\0"s);
  EXPECT_EQ(Writer(3).Bytes("ab").Finish(), "\x80\x03" "C\x02" "ab."s);
  EXPECT_EQ(Writer(3).Bytes(std::string(256, 'a')).Finish().substr(0, 7), "\x80\x03" "B\0\1\0\0"s);
  // b'' too (CPython writes __builtin__.bytes() there, which torch.load(weights_only=True)
  // refuses; pickle.loads reads both).
  EXPECT_EQ(Writer(2).Bytes("").Finish(),
            "\x80\x02" "c_codecs\nencode\nX\0\0\0\0X\x06\0\0\0latin1\x86R."s);
  // Python 3 under protocol 2: the bytes as latin-1 text, itself UTF-8 in BINUNICODE.
  EXPECT_EQ(Writer(2).Bytes("\xe9").Finish(),
            "\x80\x02" "c_codecs\nencode\nX\x02\0\0\0\xc3\xa9X\x06\0\0\0latin1\x86R."s);
  EXPECT_EQ(Writer(2).Float(1.5).Finish(), "\x80\x02G\x3f\xf8\0\0\0\0\0\0."s);
}

TEST(PickleWriter, EveryKindRoundTripsInEveryProtocol) {
  auto cls = Value::Global("my.module", "Point");
  auto point = Obj(cls, {I(1)}, Value::Dict({{S("x"), I(3)}, {S("y"), Value::None()}}));
  auto slots = Obj(cls, {}, Value::Tuple({Value::None(), Value::Dict({{S("z"), I(5)}})}));
  auto filled = Obj(Value::Global("collections", "OrderedDict"), {});
  filled->dict = {{S("a"), I(1)}, {S("b"), I(2)}};
  filled->items = {I(9)};
  std::vector<ValuePtr> many;
  std::vector<std::pair<ValuePtr, ValuePtr>> many_pairs;
  for (int i = 0; i < 2500; ++i) {
    many.push_back(I(i * 7919));
    many_pairs.emplace_back(S(std::to_string(i)), I(-i));
  }
  const ValuePtr tree = Value::List({
      Value::None(), Value::Bool(true), Value::Bool(false), I(0), I(-300), I(1),
      I(std::numeric_limits<int64_t>::min()), Value::Float(0.1), Value::Float(-0.0),
      Value::Float(-HUGE_VAL), Value::Float(std::nan("")), Value::Float(5e-324),
      S(""), S("h\u00e9llo \u20ac \U0001F600"), S(std::string(300, 's')),
      S(std::string(70000, 't')),
      Value::Bytes(""), Value::Bytes("\0\x01\x80\xff"s), Value::Bytes(std::string(300, '\xfe')),
      Value::Bytes(std::string(70000, 'b')),
      Value::Tuple({}), Value::Tuple({I(1)}), Value::Tuple({I(1), I(2)}),
      Value::Tuple({I(1), I(2), I(3)}), Value::Tuple({I(1), I(2), I(3), I(4), I(5)}),
      Value::List({}), Value::List({Value::List({Value::List({})})}), Value::List(many),
      Value::Dict({}), Value::Dict({{I(1), S("one")}, {Value::Tuple({I(1), I(2)}), S("pair")}}),
      Value::Dict(many_pairs), SetOf({}), SetOf({I(1), S("a")}), SetOf(many),
      Value::Global("torch", "float32"), point, slots, filled,
      Obj(Value::Global("torch", "Size"), {Value::Tuple({I(2), I(3)})}),
      Persistent(Value::Tuple({S("storage"), Value::Global("torch", "FloatStorage"), S("0")})),
  });
  const auto allow = Allow({"my.module.Point", "collections.OrderedDict", "torch.float32",
                            "torch.Size", "torch.FloatStorage", "builtins.set",
                            "_codecs.encode"});
  for (int p = 2; p <= 5; ++p) {
    SCOPED_TRACE(p);
    const std::string bytes = Writer(p).Put(*tree).Finish();
    const ValuePtr back = Decode(bytes, allow, "round-trip");
    EXPECT_EQ(R(Normalize(back)), R(tree));
    EXPECT_TRUE(std::signbit(back->items[8]->f));
    ASSERT_EQ(back->items.size(), 40u);
    ASSERT_TRUE(back->items[35]->Attr("x"));
    EXPECT_EQ(back->items[35]->Attr("x")->AsInt("x"), 3);
    ASSERT_TRUE(back->items[36]->Attr("z"));
    EXPECT_EQ(back->items[36]->Attr("z")->AsInt("z"), 5);  // (None, slots) state
    EXPECT_EQ(back->items[37]->Get("b")->AsInt("b"), 2);
  }
}

TEST(PickleWriter, Refusals) {
  EXPECT_HAS(ErrorOf([] { Writer(1); }), "protocol 1 is not supported");
  EXPECT_HAS(ErrorOf([] { Writer(6); }), "protocol 6 is not supported");
  EXPECT_HAS(ErrorOf([] { Writer().Tuple(4); }), "Tuple(4)");
  EXPECT_HAS(ErrorOf([] { Writer().Global("os\nx", "y"); }), "newline");
  auto bad = Obj(Value::Global("m", "f"), {});
  bad->args = Value::List({});
  EXPECT_HAS(ErrorOf([&] { Writer().Put(*bad); }), "tuple of arguments");
  auto null_item = Value::List({nullptr});
  EXPECT_HAS(ErrorOf([&] { Writer().Put(*null_item); }), "null value");
  ValuePtr deep = Value::List({});
  for (int i = 0; i < 1001; ++i) deep = Value::List({deep});
  EXPECT_HAS(ErrorOf([&] { Writer().Put(*deep); }), "nested deeper than 1000");
}

}  // namespace
}  // namespace pickle
}  // namespace dcpp
