#include "core/storage/dcp/pickle.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <set>
#include <string>

#include "core/base/error.h"
#include "core/testing/errors.h"

namespace dcpp {
namespace pickle {
namespace {

using namespace std::string_literals;
using ::dcpp::testing::ErrorOf;
using K = Value::Kind;

// Pickles CPython and PyTorch wrote, embedded byte for byte. Regenerate with python3 and the
// expression in each comment (octal escapes, so a following digit never joins an escape).
// shared = [1, 2]
// obj = {'ints': (0, 1, 255, 256, 65535, 65536, -1, -128, -129, -32768, 2**31 - 1, 2**31, -2**31,
//                 -2**31 - 1, 2**40, 2**63 - 1, -2**63),
//        'floats': [0.0, 1.5, -2.25, 1e300, 0.1],
//        'text': 'h\u00e9llo \u20ac\\n', 'bytes': b'\x00\xff\x80ab', 'set': {1, 2, 3},
//        'frozen': frozenset({4}), 'nbt': [None, True, False], 'shared': (shared, shared),
//        'empty': ((), [], {})}
// kNested[p] = pickle.dumps(obj, protocol=p) (CPython 3.11)
const std::string kNested[] = {
    // protocol 0
    "(dp0\012Vints\012p1\012(I0\012I1\012I255\012I256\012I65535\012I65536\012I-1\012I-128"
    "\012I-129\012I-32768\012I2147483647\012L2147483648L\012I-2147483648\012L-2147483649L"
    "\012L1099511627776L\012L9223372036854775807L\012L-9223372036854775808L\012tp2\012sVf"
    "loats\012p3\012(lp4\012F0.0\012aF1.5\012aF-2.25\012aF1e+300\012aF0.1\012asVtext\012p"
    "5\012Vh\351llo \\u20ac\\u005cn\012p6\012sVbytes\012p7\012c_codecs\012encode\012p8"
    "\012(V\\u0000\377\200ab\012p9\012Vlatin1\012p10\012tp11\012Rp12\012sVset\012p13\012c"
    "__builtin__\012set\012p14\012((lp15\012I1\012aI2\012aI3\012atp16\012Rp17\012sVfrozen"
    "\012p18\012c__builtin__\012frozenset\012p19\012((lp20\012I4\012atp21\012Rp22\012sVnb"
    "t\012p23\012(lp24\012NaI01\012aI00\012asVshared\012p25\012((lp26\012I1\012aI2\012ag2"
    "6\012tp27\012sVempty\012p28\012((t(lp29\012(dp30\012tp31\012s."s,
    // protocol 1
    "}q\000(X\004\000\000\000intsq\001(K\000K\001K\377M\000\001M\377\377J\000\000\001\000"
    "J\377\377\377\377J\200\377\377\377J\177\377\377\377J\000\200\377\377J\377\377\377"
    "\177L2147483648L\012J\000\000\000\200L-2147483649L\012L1099511627776L\012L9223372036"
    "854775807L\012L-9223372036854775808L\012tq\002X\006\000\000\000floatsq\003]q\004(G"
    "\000\000\000\000\000\000\000\000G\?\370\000\000\000\000\000\000G\300\002\000\000\000"
    "\000\000\000G~7\344<\210\000u\234G\?\271\231\231\231\231\231\232eX\004\000\000\000te"
    "xtq\005X\014\000\000\000h\303\251llo \342\202\254\\nq\006X\005\000\000\000bytesq\007"
    "c_codecs\012encode\012q\010(X\007\000\000\000\000\303\277\302\200abq\011X\006\000"
    "\000\000latin1q\012tq\013Rq\014X\003\000\000\000setq\015c__builtin__\012set\012q\016"
    "(]q\017(K\001K\002K\003etq\020Rq\021X\006\000\000\000frozenq\022c__builtin__\012froz"
    "enset\012q\023(]q\024K\004atq\025Rq\026X\003\000\000\000nbtq\027]q\030(NI01\012I00"
    "\012eX\006\000\000\000sharedq\031(]q\032(K\001K\002eh\032tq\033X\005\000\000\000empt"
    "yq\034()]q\035}q\036tq\037u."s,
    // protocol 2
    "\200\002}q\000(X\004\000\000\000intsq\001(K\000K\001K\377M\000\001M\377\377J\000\000"
    "\001\000J\377\377\377\377J\200\377\377\377J\177\377\377\377J\000\200\377\377J\377"
    "\377\377\177\212\005\000\000\000\200\000J\000\000\000\200\212\005\377\377\377\177"
    "\377\212\006\000\000\000\000\000\001\212\010\377\377\377\377\377\377\377\177\212\010"
    "\000\000\000\000\000\000\000\200tq\002X\006\000\000\000floatsq\003]q\004(G\000\000"
    "\000\000\000\000\000\000G\?\370\000\000\000\000\000\000G\300\002\000\000\000\000\000"
    "\000G~7\344<\210\000u\234G\?\271\231\231\231\231\231\232eX\004\000\000\000textq\005X"
    "\014\000\000\000h\303\251llo \342\202\254\\nq\006X\005\000\000\000bytesq\007c_codecs"
    "\012encode\012q\010X\007\000\000\000\000\303\277\302\200abq\011X\006\000\000\000lati"
    "n1q\012\206q\013Rq\014X\003\000\000\000setq\015c__builtin__\012set\012q\016]q\017(K"
    "\001K\002K\003e\205q\020Rq\021X\006\000\000\000frozenq\022c__builtin__\012frozenset"
    "\012q\023]q\024K\004a\205q\025Rq\026X\003\000\000\000nbtq\027]q\030(N\210\211eX\006"
    "\000\000\000sharedq\031]q\032(K\001K\002eh\032\206q\033X\005\000\000\000emptyq\034)]"
    "q\035}q\036\207q\037u."s,
    // protocol 3
    "\200\003}q\000(X\004\000\000\000intsq\001(K\000K\001K\377M\000\001M\377\377J\000\000"
    "\001\000J\377\377\377\377J\200\377\377\377J\177\377\377\377J\000\200\377\377J\377"
    "\377\377\177\212\005\000\000\000\200\000J\000\000\000\200\212\005\377\377\377\177"
    "\377\212\006\000\000\000\000\000\001\212\010\377\377\377\377\377\377\377\177\212\010"
    "\000\000\000\000\000\000\000\200tq\002X\006\000\000\000floatsq\003]q\004(G\000\000"
    "\000\000\000\000\000\000G\?\370\000\000\000\000\000\000G\300\002\000\000\000\000\000"
    "\000G~7\344<\210\000u\234G\?\271\231\231\231\231\231\232eX\004\000\000\000textq\005X"
    "\014\000\000\000h\303\251llo \342\202\254\\nq\006X\005\000\000\000bytesq\007C\005"
    "\000\377\200abq\010X\003\000\000\000setq\011cbuiltins\012set\012q\012]q\013(K\001K"
    "\002K\003e\205q\014Rq\015X\006\000\000\000frozenq\016cbuiltins\012frozenset\012q\017"
    "]q\020K\004a\205q\021Rq\022X\003\000\000\000nbtq\023]q\024(N\210\211eX\006\000\000"
    "\000sharedq\025]q\026(K\001K\002eh\026\206q\027X\005\000\000\000emptyq\030)]q\031}q"
    "\032\207q\033u."s,
    // protocol 4
    "\200\004\225\027\001\000\000\000\000\000\000}\224(\214\004ints\224(K\000K\001K\377M"
    "\000\001M\377\377J\000\000\001\000J\377\377\377\377J\200\377\377\377J\177\377\377"
    "\377J\000\200\377\377J\377\377\377\177\212\005\000\000\000\200\000J\000\000\000\200"
    "\212\005\377\377\377\177\377\212\006\000\000\000\000\000\001\212\010\377\377\377\377"
    "\377\377\377\177\212\010\000\000\000\000\000\000\000\200t\224\214\006floats\224]\224"
    "(G\000\000\000\000\000\000\000\000G\?\370\000\000\000\000\000\000G\300\002\000\000"
    "\000\000\000\000G~7\344<\210\000u\234G\?\271\231\231\231\231\231\232e\214\004text"
    "\224\214\014h\303\251llo \342\202\254\\n\224\214\005bytes\224C\005\000\377\200ab\224"
    "\214\003set\224\217\224(K\001K\002K\003\220\214\006frozen\224(K\004\221\224\214\003n"
    "bt\224]\224(N\210\211e\214\006shared\224]\224(K\001K\002eh\020\206\224\214\005empty"
    "\224)]\224}\224\207\224u."s,
    // protocol 5
    "\200\005\225\027\001\000\000\000\000\000\000}\224(\214\004ints\224(K\000K\001K\377M"
    "\000\001M\377\377J\000\000\001\000J\377\377\377\377J\200\377\377\377J\177\377\377"
    "\377J\000\200\377\377J\377\377\377\177\212\005\000\000\000\200\000J\000\000\000\200"
    "\212\005\377\377\377\177\377\212\006\000\000\000\000\000\001\212\010\377\377\377\377"
    "\377\377\377\177\212\010\000\000\000\000\000\000\000\200t\224\214\006floats\224]\224"
    "(G\000\000\000\000\000\000\000\000G\?\370\000\000\000\000\000\000G\300\002\000\000"
    "\000\000\000\000G~7\344<\210\000u\234G\?\271\231\231\231\231\231\232e\214\004text"
    "\224\214\014h\303\251llo \342\202\254\\n\224\214\005bytes\224C\005\000\377\200ab\224"
    "\214\003set\224\217\224(K\001K\002K\003\220\214\006frozen\224(K\004\221\224\214\003n"
    "bt\224]\224(N\210\211e\214\006shared\224]\224(K\001K\002eh\020\206\224\214\005empty"
    "\224)]\224}\224\207\224u."s,
};
// pickletools.optimize(pickle.dumps((1, 'a', b'\x00\xff', [1.5], {'k': None}), protocol=2))
const std::string kMixed2 =
    "\200\002(K\001X\001\000\000\000ac_codecs\012encode\012X\003\000\000\000\000\303\277X"
    "\006\000\000\000latin1\206R]G\?\370\000\000\000\000\000\000a}X\001\000\000\000kNst."s;
// pickletools.optimize(pickle.dumps((1, 'a', b'\x00\xff', [1.5], {'k': None}), protocol=3))
const std::string kMixed3 =
    "\200\003(K\001X\001\000\000\000aC\002\000\377]G\?\370\000\000\000\000\000\000a}X\001"
    "\000\000\000kNst."s;
// pickletools.optimize(pickle.dumps([0, 255, 256, 65535, 65536, -1, 2**31 - 1, -2**31, 2**31,
//                                    -2**31 - 1, 2**63 - 1, -2**63, 1 << 40], protocol=2))
const std::string kInts2 =
    "\200\002](K\000K\377M\000\001M\377\377J\000\000\001\000J\377\377\377\377J\377\377"
    "\377\177J\000\000\000\200\212\005\000\000\000\200\000\212\005\377\377\377\177\377"
    "\212\010\377\377\377\377\377\377\377\177\212\010\000\000\000\000\000\000\000\200\212"
    "\006\000\000\000\000\000\001e."s;
// pickletools.optimize(pickle.dumps(({1}, b'\x01', [], {}, [True], {'a': 1, 'b': (1, 2, 3, 4)},
//                                     'x' * 300, -0.0, float('inf')), protocol=2))
const std::string kContainers2 =
    "\200\002(c__builtin__\012set\012]K\001a\205Rc_codecs\012encode\012X\001\000\000\000"
    "\001X\006\000\000\000latin1\206R]}]\210a}(X\001\000\000\000aK\001X\001\000\000\000b("
    "K\001K\002K\003K\004tuX,\001\000\000xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "G\200\000\000\000\000\000\000\000G\177\360\000\000\000\000\000\000t."s;
// pickletools.optimize(pickle.dumps(({1}, b'', [], {}, [True], {'a': 1, 'b': (1, 2, 3, 4)},
//                                     'x' * 3, b'y' * 300, b'z' * 3), protocol=3))
const std::string kContainers3 =
    "\200\003(cbuiltins\012set\012]K\001a\205RC\000]}]\210a}(X\001\000\000\000aK\001X\001"
    "\000\000\000b(K\001K\002K\003K\004tuX\003\000\000\000xxxB,\001\000\000yyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyC\003zzzt."s;
// data.pkl of torch.save({'w': torch.ones(2, 3)}), through pickletools.optimize
const std::string kTorchSaveDict =
    "\200\002}X\001\000\000\000wctorch._utils\012_rebuild_tensor_v2\012((X\007\000\000"
    "\000storagectorch\012FloatStorage\012X\001\000\000\0000X\003\000\000\000cpuK\006tQK"
    "\000K\002K\003\206K\003K\001\206\211ccollections\012OrderedDict\012)RtRs."s;
// data.pkl of torch.save(collections.OrderedDict(w=torch.ones(2, 3), step=torch.tensor(7))),
// as written (BINPUT/BINGET kept)
const std::string kTorchSaveOrderedDict =
    "\200\002ccollections\012OrderedDict\012q\000)Rq\001(X\001\000\000\000wq\002ctorch._u"
    "tils\012_rebuild_tensor_v2\012q\003((X\007\000\000\000storageq\004ctorch\012FloatSto"
    "rage\012q\005X\001\000\000\0000q\006X\003\000\000\000cpuq\007K\006tq\010QK\000K\002K"
    "\003\206q\011K\003K\001\206q\012\211h\000)Rq\013tq\014Rq\015X\004\000\000\000stepq"
    "\016h\003((h\004ctorch\012LongStorage\012q\017X\001\000\000\0001q\020h\007K\001tq"
    "\021QK\000))\211h\000)Rq\022tq\023Rq\024u."s;
// pickle.dumps(bytearray(b'\x00ab'), protocol=5)
const std::string kByteArray5 =
    "\200\005\225\016\000\000\000\000\000\000\000\226\003\000\000\000\000\000\000\000\000"
    "ab\224."s;
// The .metadata of dcp.save({"w": torch.ones(2, 3), "step": 7}, checkpoint_id="/tmp/dcpx")
// (torch 2.11, one process).
const std::string kDcpMetadata =
    "\200\004\225\214\003\000\000\000\000\000\000\214%torch.distributed.checkpoint.metada"
    "ta\224\214\010Metadata\224\223\224)\201\224}\224(\214\023state_dict_metadata\224}"
    "\224(\214\001w\224h\000\214\025TensorStorageMetadata\224\223\224)\201\224}\224(\214"
    "\012properties\224h\000\214\020TensorProperties\224\223\224)\201\224(\214\005torch"
    "\224\214\007float32\224\223\224\214\023torch.serialization\224\214\013_get_layout"
    "\224\223\224\214\015torch.strided\224\205\224R\224\211h\000\214\024_MEM_FORMAT_ENCOD"
    "ING\224\223\224K\000\205\224R\224\211t\224b\214\004size\224\214\005torch\224\214\004"
    "Size\224\223\224K\002K\003\206\224\205\224R\224\214\006chunks\224]\224h\000\214\024C"
    "hunkStorageMetadata\224\223\224)\201\224}\224(\214\007offsets\224h!K\000K\000\206"
    "\224\205\224R\224\214\005sizes\224h!K\002K\003\206\224\205\224R\224ubaub\214\004step"
    "\224h\000\214\024BytesStorageMetadata\224\223\224)\201\224u\214\014planner_data\224}"
    "\224(h\007h\007\205\224h3h3\205\224u\214\014storage_data\224}\224(h\000\214\015Metad"
    "ataIndex\224\223\224)\201\224}\224(\214\003fqn\224h3\214\005index\224Nub\214'torch.d"
    "istributed.checkpoint.filesystem\224\214\014_StorageInfo\224\223\224)\201\224}\224("
    "\214\015relative_path\224\214\014__0_0.distcp\224\214\006offset\224K\000\214\006leng"
    "th\224M\355\004ubh>)\201\224}\224(hAh\007hBK\000hJh!K\000K\000\206\224\205\224R\224u"
    "bhE)\201\224}\224(hHhIhJM\355\004hKM)\006ubu\214\014storage_meta\224h\000\214\013Sto"
    "rageMeta\224\223\224)\201\224}\224(\214\015checkpoint_id\224\214\007pathlib\224\214"
    "\011PosixPath\224\223\224\214\001/\224\214\003tmp\224\214\004dcpx\224\207\224R\224"
    "\214\007save_id\224\214$eec84ed7-de9d-492a-af64-e4840c51b7ce\224\214\007load_id\224N"
    "\214\007modules\224]\224ub\214\007version\224\214\0051.0.0\224ub."s;

// An allow-list of dotted names.
AllowGlobal Allow(std::set<std::string> names) {
  return [names](const std::string& m, const std::string& n) {
    return names.count(m + "." + n) > 0;
  };
}
const AllowGlobal kAllowAll = [](const std::string&, const std::string&) { return true; };

std::string R(const ValuePtr& v) { return Repr(*v, 1 << 20); }

// What a caller does with protocol 0-3's spellings of bytes and sets, so that every
// protocol's decoding of kNested compares equal.
ValuePtr Normalize(const ValuePtr& v) {
  if (!v) return v;
  if (v->IsObjectOf("_codecs", "encode")) {
    const auto& a = v->args->items;
    EXPECT_EQ(a.size(), 2u);
    EXPECT_EQ(a[1]->AsStr("encoding"), "latin1");
    std::string bytes;  // the text's code points, all < 256
    const std::string& t = a[0]->AsStr("text");
    for (size_t i = 0; i < t.size(); ++i) {
      const auto c = static_cast<uint8_t>(t[i]);
      if (c < 0x80) {
        bytes.push_back(static_cast<char>(c));
      } else {
        bytes.push_back(static_cast<char>(((c & 0x03) << 6) | (t[++i] & 0x3f)));
      }
    }
    return Value::Bytes(bytes);
  }
  if (v->IsObjectOf("builtins", "bytes")) return Value::Bytes("");
  if (v->IsObjectOf("builtins", "set") || v->IsObjectOf("builtins", "frozenset")) {
    auto s = std::make_shared<Value>();
    s->kind = K::kSet;
    for (const auto& item : v->args->items.at(0)->items) s->items.push_back(Normalize(item));
    return s;
  }
  auto r = std::make_shared<Value>(*v);
  for (auto& item : r->items) item = Normalize(item);
  for (auto& kv : r->dict) kv = {Normalize(kv.first), Normalize(kv.second)};
  r->args = Normalize(v->args);
  r->state = Normalize(v->state);
  return r;
}

ValuePtr SetOf(std::vector<ValuePtr> items) {
  auto s = std::make_shared<Value>();
  s->kind = K::kSet;
  s->items = std::move(items);
  return s;
}

ValuePtr Obj(ValuePtr cls, std::vector<ValuePtr> args, ValuePtr state = nullptr) {
  auto o = std::make_shared<Value>();
  o->kind = K::kObject;
  o->cls = std::move(cls);
  o->args = Value::Tuple(std::move(args));
  o->state = std::move(state);
  return o;
}

ValuePtr Persistent(ValuePtr id) {
  auto p = std::make_shared<Value>();
  p->kind = K::kPersistent;
  p->args = std::move(id);
  return p;
}

ValuePtr S(const std::string& s) { return Value::Str(s); }
ValuePtr I(int64_t i) { return Value::Int(i); }

// ------------------------------------------------------------------ CPython's own pickles

const char kNestedRepr[] =
    "{'ints': (0, 1, 255, 256, 65535, 65536, -1, -128, -129, -32768, 2147483647, 2147483648, "
    "-2147483648, -2147483649, 1099511627776, 9223372036854775807, -9223372036854775808), "
    "'floats': [0.0, 1.5, -2.25, 1e+300, 0.1], 'text': 'héllo €\\\\n', "
    "'bytes': b'\\x00\\xff\\x80ab', 'set': {1, 2, 3}, 'frozen': {4}, "
    "'nbt': [None, True, False], 'shared': ([1, 2], [1, 2]), 'empty': ((), [], {})}";

TEST(PickleCPython, EveryProtocolDecodesToTheSameTree) {
  const auto allow = Allow({"builtins.set", "builtins.frozenset", "_codecs.encode"});
  for (int p = 0; p <= 5; ++p) {
    SCOPED_TRACE(p);
    const ValuePtr v = Decode(kNested[p], allow, "nested.pkl");
    EXPECT_EQ(R(Normalize(v)), kNestedRepr);
    // Protocols 0-3 spell a set as set([...]); 0-2 name it __builtin__.set, read as builtins.
    EXPECT_EQ(v->Get("set")->IsObjectOf("builtins", "set"), p < 4);
    EXPECT_EQ(v->Get("set")->Is(K::kSet), p >= 4);
    EXPECT_EQ(v->Get("bytes")->IsObjectOf("_codecs", "encode"), p < 3);
    // The shared list is one Value, as it is one object in Python.
    const auto& shared = v->Get("shared")->AsSeq("shared");
    ASSERT_EQ(shared.size(), 2u);
    EXPECT_EQ(shared[0].get(), shared[1].get());
    // Exact values, not only their text.
    const auto& ints = v->Get("ints")->AsSeq("ints");
    ASSERT_EQ(ints.size(), 17u);
    EXPECT_EQ(ints[11]->AsInt("2**31"), int64_t{1} << 31);
    EXPECT_EQ(ints[13]->AsInt("-2**31-1"), -(int64_t{1} << 31) - 1);
    EXPECT_EQ(ints[15]->AsInt("max"), std::numeric_limits<int64_t>::max());
    EXPECT_EQ(ints[16]->AsInt("min"), std::numeric_limits<int64_t>::min());
    EXPECT_EQ(v->Get("floats")->items[3]->f, 1e300);
    EXPECT_EQ(v->Get("floats")->items[4]->f, 0.1);
    EXPECT_EQ(v->Get("text")->AsStr("text"), "h\u00e9llo \u20ac\\n");
    const auto& nbt = v->Get("nbt")->items;
    EXPECT_TRUE(nbt[0]->Is(K::kNone));
    EXPECT_TRUE(nbt[1]->Is(K::kBool) && nbt[1]->b);  // protocols 0-1: INT "01"
    EXPECT_TRUE(nbt[2]->Is(K::kBool) && !nbt[2]->b);
  }
}

TEST(PickleCPython, SetsAndBytesOfOldProtocolsNeedTheirGlobals) {
  EXPECT_HAS(ErrorOf([] { Decode(kNested[0], Allow({"_codecs.encode"}), "p0.pkl"); }),
             "global 'builtins.set' is not allowed in p0.pkl");
  EXPECT_HAS(ErrorOf([] { Decode(kNested[2], Allow({"builtins.set"}), "p2.pkl"); }),
             "global '_codecs.encode' is not allowed in p2.pkl");
  EXPECT_EQ(ErrorOf([] { Decode(kNested[4], Allow({}), "p4.pkl"); }), "(no error)");
}

TEST(PickleCPython, ByteArrayOfProtocol5) {
  const ValuePtr v = Decode(kByteArray5, Allow({}), "ba.pkl");
  ASSERT_TRUE(v->Is(K::kBytes));
  EXPECT_EQ(v->str, "\0ab"s);
}

// -------------------------------------------------------------------- PyTorch's pickles

const std::set<std::string> kDcpGlobals = {
    "torch.distributed.checkpoint.metadata.Metadata",
    "torch.distributed.checkpoint.metadata.TensorStorageMetadata",
    "torch.distributed.checkpoint.metadata.TensorProperties",
    "torch.distributed.checkpoint.metadata.ChunkStorageMetadata",
    "torch.distributed.checkpoint.metadata.BytesStorageMetadata",
    "torch.distributed.checkpoint.metadata.MetadataIndex",
    "torch.distributed.checkpoint.metadata.StorageMeta",
    "torch.distributed.checkpoint.metadata._MEM_FORMAT_ENCODING",
    "torch.distributed.checkpoint.filesystem._StorageInfo",
    "torch.serialization._get_layout",
    "torch.float32",
    "torch.Size",
    "pathlib.PosixPath",
};
const std::string kMd = "torch.distributed.checkpoint.metadata";

TEST(PickleTorch, DcpMetadataNavigates) {
  const ValuePtr md = Decode(kDcpMetadata, Allow(kDcpGlobals), "/tmp/dcpx/.metadata");
  ASSERT_TRUE(md->IsObjectOf(kMd, "Metadata"));
  EXPECT_EQ(md->Attr("version")->AsStr("version"), "1.0.0");
  EXPECT_EQ(md->Attr("no_such_field"), nullptr);

  const ValuePtr sdm = md->Attr("state_dict_metadata");
  ASSERT_TRUE(sdm && sdm->Is(K::kDict));
  ASSERT_EQ(sdm->dict.size(), 2u);
  const ValuePtr w = sdm->Get("w");
  ASSERT_TRUE(w->IsObjectOf(kMd, "TensorStorageMetadata"));
  const ValuePtr size = w->Attr("size");
  ASSERT_TRUE(size->IsObjectOf("torch", "Size"));
  ASSERT_EQ(size->args->items.size(), 1u);
  EXPECT_EQ(R(size->args->items[0]), "(2, 3)");
  EXPECT_EQ(R(size), "torch.Size((2, 3))");

  const auto& chunks = w->Attr("chunks")->AsSeq("chunks");
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(R(chunks[0]), kMd + ".ChunkStorageMetadata(offsets=torch.Size((0, 0)), "
                                "sizes=torch.Size((2, 3)))");

  // TensorProperties pickles a plain 5-tuple through __getstate__, not a dict: no Attr().
  const ValuePtr props = w->Attr("properties");
  ASSERT_TRUE(props->IsObjectOf(kMd, "TensorProperties"));
  EXPECT_EQ(props->Attr("dtype"), nullptr);
  ASSERT_TRUE(props->state && props->state->Is(K::kTuple));
  EXPECT_EQ(R(props->state), "(torch.float32, torch.serialization._get_layout('torch.strided'), "
                             "False, " + kMd + "._MEM_FORMAT_ENCODING(0), False)");
  EXPECT_TRUE(props->state->items[0]->IsGlobal("torch", "float32"));

  EXPECT_TRUE(sdm->Get("step")->IsObjectOf(kMd, "BytesStorageMetadata"));
  EXPECT_EQ(R(md->Attr("planner_data")), "{'w': ('w',), 'step': ('step',)}");

  // storage_data is keyed by MetadataIndex objects, not strings.
  const ValuePtr storage = md->Attr("storage_data");
  ASSERT_EQ(storage->dict.size(), 2u);
  std::set<std::string> fqns;
  for (const auto& [index, info] : storage->dict) {
    ASSERT_TRUE(index->IsObjectOf(kMd, "MetadataIndex"));
    ASSERT_TRUE(info->IsObjectOf("torch.distributed.checkpoint.filesystem", "_StorageInfo"));
    fqns.insert(index->Attr("fqn")->AsStr("fqn"));
    EXPECT_EQ(info->Attr("relative_path")->AsStr("relative_path"), "__0_0.distcp");
    EXPECT_GT(info->Attr("length")->AsInt("length"), 0);
  }
  EXPECT_EQ(fqns, (std::set<std::string>{"w", "step"}));
  // Fields left at their default are not pickled: 'step' has no offset.
  EXPECT_EQ(R(storage->dict[0].first), kMd + ".MetadataIndex(fqn='step', index=None)");
  EXPECT_EQ(R(storage->dict[1].first),
            kMd + ".MetadataIndex(fqn='w', index=0, offset=torch.Size((0, 0)))");

  const ValuePtr meta = md->Attr("storage_meta");
  ASSERT_TRUE(meta->IsObjectOf(kMd, "StorageMeta"));
  EXPECT_EQ(R(meta->Attr("checkpoint_id")), "pathlib.PosixPath('/', 'tmp', 'dcpx')");
  EXPECT_TRUE(meta->Attr("load_id")->Is(K::kNone));
}

TEST(PickleTorch, DcpMetadataWithoutTorchSizeIsRefusedNamingIt) {
  auto globals = kDcpGlobals;
  globals.erase("torch.Size");
  const std::string e =
      ErrorOf([&] { Decode(kDcpMetadata, Allow(globals), "/tmp/dcpx/.metadata"); });
  EXPECT_HAS(e, "global 'torch.Size' is not allowed in /tmp/dcpx/.metadata");
  EXPECT_HAS(e, "STACK_GLOBAL at byte");
}

TEST(PickleTorch, TorchSaveDataPkl) {
  const ValuePtr sd =
      Decode(kTorchSaveOrderedDict,
             Allow({"collections.OrderedDict", "torch._utils._rebuild_tensor_v2",
                    "torch.FloatStorage", "torch.LongStorage"}),
             "archive/data.pkl");
  // OrderedDict() is REDUCEd, then filled by SETITEMS: the pairs land in the object's dict.
  ASSERT_TRUE(sd->IsObjectOf("collections", "OrderedDict"));
  ASSERT_EQ(sd->dict.size(), 2u);
  EXPECT_EQ(sd->dict[0].first->AsStr("key"), "w");
  const ValuePtr w = sd->Get("w");
  ASSERT_TRUE(w->IsObjectOf("torch._utils", "_rebuild_tensor_v2"));
  const auto& a = w->args->items;
  ASSERT_EQ(a.size(), 6u);
  ASSERT_TRUE(a[0]->Is(K::kPersistent));
  EXPECT_EQ(R(a[0]->args), "('storage', torch.FloatStorage, '0', 'cpu', 6)");
  EXPECT_EQ(a[1]->AsInt("offset"), 0);
  EXPECT_EQ(R(a[2]), "(2, 3)");
  EXPECT_EQ(R(a[3]), "(3, 1)");
  EXPECT_EQ(R(a[4]), "False");
  // The backward hooks are OrderedDict() through BINGET 0, the same global as the container.
  EXPECT_TRUE(a[5]->IsObjectOf("collections", "OrderedDict"));
  EXPECT_EQ(a[5]->cls.get(), sd->cls.get());
  EXPECT_EQ(R(sd->Get("step")->args->items[0]->args),
            "('storage', torch.LongStorage, '1', 'cpu', 1)");
  EXPECT_EQ(R(sd->Get("step")->args->items[2]), "()");
}

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

// ------------------------------------------------------------------------------ Decode

TEST(PickleDecode, MemoSharesOneValue) {
  // EMPTY_LIST BINPUT 0 BINGET 0 BININT1 7 APPEND TUPLE2: the APPEND is seen through both.
  ValuePtr v = Decode("\x80\x02]q\0h\0K\x07" "a\x86."s, nullptr, "m");
  EXPECT_EQ(R(v), "([7], [7])");
  EXPECT_EQ(v->items[0].get(), v->items[1].get());
  v = Decode("\x80\x02]2K\x07" "a\x86."s, nullptr, "dup");
  EXPECT_EQ(v->items[0].get(), v->items[1].get());
  // MEMOIZE, LONG_BINPUT, LONG_BINGET.
  v = Decode("\x80\x04]\x94r\x05\0\0\0j\0\0\0\0j\x05\0\0\0\x87."s, nullptr, "long");
  EXPECT_EQ(v->items[0].get(), v->items[2].get());
  // BUILD through a memo entry sets the state of the one object.
  v = Decode("\x80\x02" "cm\nC\n)\x81q\0h\0}X\x01\0\0\0aK\x01sb\x86."s, Allow({"m.C"}), "b");
  EXPECT_EQ(R(v), "(m.C(a=1), m.C(a=1))");
  // Protocol 0's PUT and GET.
  v = Decode("((lp0\nI1\nag0\nt."s, nullptr, "p0");
  EXPECT_EQ(R(v), "([1], [1])");
  EXPECT_EQ(v->items[0].get(), v->items[1].get());
}

TEST(PickleDecode, Protocol0Text) {
  auto d = [](const std::string& s) { return R(Decode(s, nullptr, "p0")); };
  EXPECT_EQ(d("I01\n."), "True");
  EXPECT_EQ(d("I00\n."), "False");
  EXPECT_EQ(d("I-5\n."), "-5");
  EXPECT_EQ(d("I9223372036854775807\n."), "9223372036854775807");
  EXPECT_HAS(ErrorOf([&] { d("I9223372036854775808\n."); }), "fits in 64 bits");
  EXPECT_HAS(ErrorOf([&] { d("I1x\n."); }), "'1x' is not an integer");
  EXPECT_EQ(d("L123L\n."), "123");
  EXPECT_EQ(d("L-9223372036854775808L\n."), "-9223372036854775808");
  EXPECT_EQ(d("L5\n."), "5");
  EXPECT_HAS(ErrorOf([&] { d("L99999999999999999999L\n."); }), "fits in 64 bits");
  EXPECT_EQ(d("F1.5\n."), "1.5");
  EXPECT_EQ(d("F-inf\n."), "-inf");
  EXPECT_EQ(d("F1e+300\n."), "1e+300");
  EXPECT_HAS(ErrorOf([&] { d("Fx\n."); }), "'x' is not a float");
  EXPECT_EQ(d("S'a\\'b\\x41\\101\\n'\n."), "b\"a'bAA\\n\"");
  EXPECT_EQ(d("S\"q\"\n."), "b'q'");
  EXPECT_HAS(ErrorOf([&] { d("Sabc\n."); }), "must be quoted");
  EXPECT_HAS(ErrorOf([&] { d("S'\\x4'\n."); }), "invalid \\x escape");
  // raw-unicode-escape: \u after an odd number of backslashes only; latin-1 bytes as is.
  const ValuePtr u = Decode("V\\u20ac\\\\u0041\\\\\\u0041\xe9\n."s, nullptr, "u");
  EXPECT_EQ(u->AsStr("u"), "\u20ac\\\\u0041\\\\A\u00e9");
  EXPECT_HAS(ErrorOf([&] { d("V\\u12\n."); }), "truncated \\u escape");
  EXPECT_HAS(ErrorOf([&] { d("V\\U00110000\n."); }), "beyond U+10FFFF");
  EXPECT_EQ(d("Pabc\n."), "persistent_id('abc')");
  EXPECT_EQ(d("(S'k'\nI1\nd."), "{b'k': 1}");
  EXPECT_HAS(ErrorOf([&] { d("(I1\nd."); }), "odd number of values (1)");
  EXPECT_EQ(d("(I1\nI2\nl."), "[1, 2]");
  EXPECT_EQ(d("I1\nI2\n0."), "1");         // POP
  EXPECT_EQ(d("I1\n(I2\nI3\n1."), "1");    // POP_MARK
  EXPECT_EQ(d("I1\n(0."), "1");            // POP of a bare MARK drops it, as CPython
}

TEST(PickleDecode, BinaryOpcodes) {
  auto d = [](const std::string& s) { return R(Decode(s, Allow({"m.C"}), "bin")); };
  EXPECT_EQ(d("U\x02" "ab."s), "b'ab'");
  EXPECT_EQ(d("T\x02\0\0\0ab."s), "b'ab'");
  EXPECT_HAS(ErrorOf([&] { d("T\xff\xff\xff\xff."s); }), "negative length -1");
  EXPECT_EQ(d("\x8d\x02\0\0\0\0\0\0\0ab."s), "'ab'");
  EXPECT_EQ(d("\x8e\x02\0\0\0\0\0\0\0ab."s), "b'ab'");
  EXPECT_EQ(d("B\x02\0\0\0ab."s), "b'ab'");
  EXPECT_EQ(d("\x8f(K\x01K\x02\x90."s), "{1, 2}");
  EXPECT_EQ(d("(K\x01\x91."s), "{1}");
  EXPECT_EQ(d("\x8b\x02\0\0\0\xff\x7f."s), "32767");
  EXPECT_EQ(d("\x8a\0."s), "0");
  EXPECT_EQ(d("\x8a\x01\xff."s), "-1");
  EXPECT_EQ(d("\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\xff."s), "-1");
  EXPECT_HAS(ErrorOf([&] { d("\x8a\x09\0\0\0\0\0\0\0\x80\0."s); }),
             "integer of 9 bytes does not fit in 64 bits");
  EXPECT_HAS(ErrorOf([&] { d("\x8b\xff\xff\xff\xff."s); }), "negative length");
  EXPECT_EQ(d("G\xc0\x02\0\0\0\0\0\0."s), "-2.25");
  // NEWOBJ_EX with empty keyword arguments is a NEWOBJ; with some, refused.
  EXPECT_EQ(d("cm\nC\n(K\x01t}\x92."s), "m.C(1)");
  EXPECT_HAS(ErrorOf([&] { d("cm\nC\n)}X\x01\0\0\0kK\x01s\x92."s); }),
             "keyword arguments ({'k': 1}) are not supported");
  // __slots__ state: (None or dict, slots dict); Attr looks in both.
  const ValuePtr slots =
      Decode("cm\nC\n)\x81}X\x01\0\0\0aK\x01s}X\x01\0\0\0bK\x02s\x86" "b."s, Allow({"m.C"}), "s");
  EXPECT_EQ(slots->Attr("a")->AsInt("a"), 1);
  EXPECT_EQ(slots->Attr("b")->AsInt("b"), 2);
  EXPECT_EQ(slots->Attr("c"), nullptr);
}

TEST(PickleDecode, RefusesGlobalsNotOnTheList) {
  // pickle.loads of this runs `echo hi` in a shell.
  const std::string os_system = "cos\nsystem\n(S'echo hi'\ntR.";
  for (const auto& allow : {Allow({}), Allow({"os.path", "builtins.set"}), AllowGlobal()}) {
    const std::string e = ErrorOf([&] { Decode(os_system, allow, "evil.pkl"); });
    EXPECT_HAS(e, "pickle: global 'os.system' is not allowed in evil.pkl");
    EXPECT_HAS(e, "GLOBAL at byte 0");
  }
  // pickle.dumps of a reduce to eval("1+1"), protocol 4.
  const std::string eval =
      "\x80\x04\x8c\x08" "builtins\x94\x8c\x04" "eval\x94\x93\x94\x8c\x03" "1+1\x94\x85\x94R\x94."s;
  const std::string e = ErrorOf([&] { Decode(eval, Allow({"builtins.set"}), "eval.pkl"); });
  EXPECT_HAS(e, "global 'builtins.eval' is not allowed in eval.pkl");
  EXPECT_HAS(e, "STACK_GLOBAL at byte 20");
  // Protocol 2's __builtin__ is builtins, so allowing builtins.set does not let eval in.
  const std::string builtin_eval = "\x80\x02" "c__builtin__\neval\n.";
  EXPECT_HAS(ErrorOf([&] { Decode(builtin_eval, Allow({"builtins.set"}), "x"); }),
             "'builtins.eval' is not allowed");
  EXPECT_HAS(ErrorOf([] { Decode("\x80\x04K\x01K\x02\x93."s, nullptr, "x"); }),
             "module and name are a int and a int, not str");
}

TEST(PickleDecode, RefusesOpcodesItDoesNotRun) {
  auto e = [](const std::string& s) { return ErrorOf([&] { Decode(s, kAllowAll, "f.pkl"); }); };
  EXPECT_HAS(e("(imod\ncls\n."), "opcode 0x69 (INST) at byte 1 is not supported in f.pkl");
  EXPECT_HAS(e("(cm\nC\no."), "opcode 0x6f (OBJ) at byte 6 is not supported");
  EXPECT_HAS(e("\x80\x02\x82\x01."s), "opcode 0x82 (EXT1) at byte 2");
  EXPECT_HAS(e("\x80\x02\x83\x01\0."s), "opcode 0x83 (EXT2) at byte 2");
  EXPECT_HAS(e("\x80\x02\x84\x01\0\0\0."s), "opcode 0x84 (EXT4) at byte 2");
  EXPECT_HAS(e("\x80\x05\x97."s), "opcode 0x97 (NEXT_BUFFER) at byte 2");
  EXPECT_HAS(e("\x80\x05\x98."s), "opcode 0x98 (READONLY_BUFFER) at byte 2");
  EXPECT_HAS(e("\x80\x02\xff."s), "unknown opcode 0xff at byte 2 in f.pkl");
  EXPECT_HAS(e("\x80\x06N."s), "unsupported protocol 6");
}

TEST(PickleDecode, MalformedInputIsAClearError) {
  auto e = [](const std::string& s) { return ErrorOf([&] { Decode(s, kAllowAll, "f.pkl"); }); };
  EXPECT_HAS(e(""), "pickle: truncated at byte 0 in f.pkl (no STOP)");
  EXPECT_HAS(e("\x80\x02K"), "truncated at byte 3 in f.pkl (BININT1 at byte 2 needs 1 bytes");
  EXPECT_HAS(e("\x80\x02X\xff\0\0\0ab."s), "truncated at byte 10");
  EXPECT_HAS(e("I12"), "truncated at byte 3 in f.pkl (INT at byte 0 has no end of line)");
  EXPECT_HAS(e("\x80\x04\x95\xff\0\0\0\0\0\0\0N."s), "truncated at byte 13");  // FRAME
  EXPECT_HAS(e("\x80\x02N.N"), "1 trailing bytes after STOP in f.pkl (STOP at byte 3)");
  EXPECT_HAS(e("\x80\x02."), "0 values on the stack, expected 1");
  EXPECT_HAS(e("\x80\x02NN."), "2 values on the stack");
  EXPECT_HAS(e("\x80\x02(N."), "1 MARK(s) still open");
  EXPECT_HAS(e("\x80\x02" "a."), "stack underflow in f.pkl (APPEND at byte 2)");
  EXPECT_HAS(e("\x80\x02](a."), "stack underflow in f.pkl (APPEND at byte 4)");  // not past MARK
  EXPECT_HAS(e("\x80\x02t."), "no MARK to pop to in f.pkl (TUPLE at byte 2)");
  EXPECT_HAS(e("\x80\x02\x85."), "stack underflow");
  EXPECT_HAS(e("\x80\x02h\x05."), "memo index 5 is not defined in f.pkl (BINGET at byte 2)");
  EXPECT_HAS(e("\x80\x02q\0."s), "stack underflow in f.pkl (BINPUT at byte 2)");
  EXPECT_HAS(e("g-1\n."), "bad memo index '-1'");
  EXPECT_HAS(e("\x80\x02X\x01\0\0\0\xff."s), "invalid UTF-8");
  EXPECT_HAS(e("\x80\x02X\x02\0\0\0\xc0\x80."s), "invalid UTF-8");  // overlong
  EXPECT_HAS(e("\x80\x02])R."), "calls a list, not a global");
  EXPECT_HAS(e("\x80\x02" "cm\nf\n]R."), "arguments of m.f are a list, not a tuple");
  EXPECT_HAS(e("\x80\x02]}b."), "cannot set the state of a list");
  EXPECT_HAS(e("\x80\x02}K\x01" "a."), "cannot append to a dict");
  EXPECT_HAS(e("\x80\x02](K\x01K\x02u."), "cannot set items of a list");
  EXPECT_HAS(e("\x80\x02}(K\x01u."), "odd number of values (1)");
  EXPECT_HAS(e("\x80\x02](K\x01\x90."), "cannot add items to a list");
}

// Every prefix of a real pickle, and many corruptions of it, fail with dcpp::Error or
// decode: nothing else is thrown, nothing crashes or reads out of bounds (run under
// --config=asan too).
TEST(PickleDecode, NeverCrashesOnTruncatedOrCorruptedInput) {
  std::vector<std::string> corpus = {kDcpMetadata, kTorchSaveOrderedDict, kTorchSaveDict,
                                     kByteArray5};
  for (const auto& p : kNested) corpus.push_back(p);
  auto try_decode = [](const std::string& data) {
    try {
      const ValuePtr v = Decode(data, kAllowAll, "fuzz");
      Repr(*v, 300);
      try {
        Writer(4).Put(*v);
      } catch (const Error&) {  // a cycle, or an object whose args are not a tuple
      }
      // Break any cycle the mutation made, so that it does not leak.
      v->items.clear();
      v->dict.clear();
      return std::string("(ok)");
    } catch (const Error& e) {
      return std::string(e.what());
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not a dcpp::Error: " << e.what();
      return std::string();
    }
  };
  std::mt19937 rng(1);
  int decoded = 0;
  for (const std::string& good : corpus) {
    ASSERT_EQ(try_decode(good), "(ok)");
    for (size_t n = 0; n < good.size(); ++n) {
      EXPECT_HAS(try_decode(good.substr(0, n)), StrCat("truncated at byte ", n));
    }
    for (size_t i = 0; i < good.size(); ++i) {
      for (uint8_t x : {0x01, 0x02, 0x10, 0x80, 0xff}) {
        std::string bad = good;
        bad[i] = static_cast<char>(bad[i] ^ x);
        decoded += try_decode(bad) == "(ok)";
      }
    }
    for (int round = 0; round < 2000; ++round) {
      std::string bad = good;
      const int edits = 1 + rng() % 6;
      for (int k = 0; k < edits && !bad.empty(); ++k) {
        const size_t at = rng() % bad.size();
        switch (rng() % 3) {
          case 0: bad[at] = static_cast<char>(rng()); break;
          case 1: bad.erase(at, 1 + rng() % 4); break;
          default: bad.insert(at, 1, static_cast<char>(rng())); break;
        }
      }
      decoded += try_decode(bad) == "(ok)";
    }
  }
  EXPECT_GT(decoded, 0);  // some corruptions still decode (a changed digit, say)
}

TEST(PickleDecode, DeepNestingDoesNotOverflowTheStack) {
  // [[[...]]] a million deep: built by EMPTY_LIST x N then APPEND x N-1.
  const int n = 1000000;
  const std::string deep = "\x80\x02" + std::string(n, ']') + std::string(n - 1, 'a') + ".";
  ValuePtr v = Decode(deep, nullptr, "deep");
  EXPECT_EQ(Repr(*v, 20), "[[[[[[[[[[[[[[[[[...");
  EXPECT_HAS(ErrorOf([&] { Writer().Put(*v); }), "nested deeper than 1000");
  v.reset();  // freed without recursion
}

// A container that holds itself is refused: nothing dcpp reads has one, tree walkers would loop,
// and the shared_ptr cycle would leak (libFuzzer's leak check found one on an error path).
TEST(PickleDecode, ACycleIsRefused) {
  // a = []; a.append(a), through the memo and through DUP.
  for (const std::string& p : {"\x80\x02]q\0h\0" "a."s, "]2a."s}) {
    EXPECT_HAS(ErrorOf([&] { Decode(p, nullptr, "cycle.pkl"); }),
               "pickle: a container holds itself (a reference cycle) in cycle.pkl");
  }
  // A cycle the decoder no longer holds: made, then dropped by POP (the pickle is otherwise
  // fine), or dropped by an error before STOP (the second APPEND finds a MARK, not a list; the
  // input libFuzzer's leak check found).
  for (const std::string& p : {"]2a0N."s, "\x80\x02]q\0(]2aaaa]]]]]]"s}) {
    EXPECT_HAS(ErrorOf([&] { Decode(p, nullptr, "dropped.pkl"); }), "dropped.pkl");
  }
  EXPECT_HAS(ErrorOf([] { Decode("]2a0N."s, nullptr, "dropped.pkl"); }),
             "pickle: a container holds itself (a reference cycle) in dropped.pkl");
  // d = {}; d['k'] = [d]: a longer loop, through a dict.
  EXPECT_HAS(ErrorOf([] { Decode("}q\0X\1\0\0\0k]h\0as."s, nullptr, "d.pkl"); }), "reference cycle");
  // A cycle left behind by a pickle that then fails (libFuzzer's leak input, no STOP): a plain
  // error, the values freed.
  EXPECT_HAS(ErrorOf([] { Decode("]\x88" "a\x88" "a]\x88" "a]\x88" "a]2a]a"s, nullptr, "leak.pkl"); }), "no STOP");
  // An object whose BUILD state is itself (the DCP fuzz target's leak: a Metadata object's
  // state dict replaced by DUP).
  EXPECT_HAS(ErrorOf([] { Decode("cm\nC\n)\x81" "2b."s, [](const std::string&, const std::string&) { return true; },
                                 "dcp.pkl"); }),
             "reference cycle");
  // Sharing without a cycle is fine: [x, x] with x = [].
  const ValuePtr v = Decode("](]q\0h\0e."s, nullptr, "shared.pkl");
  ASSERT_EQ(v->items.size(), 2u);
  EXPECT_EQ(v->items[0].get(), v->items[1].get());
}

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
