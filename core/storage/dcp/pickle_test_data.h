// Shared by pickle's tests: pickles CPython and PyTorch wrote, embedded byte for byte, and
// helpers that build and compare values (an allow-list of dotted names, Repr without a length
// limit, the normalization of protocol 0-3's spellings of bytes and sets, values by hand).
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "core/storage/dcp/pickle.h"

namespace dcpp {
namespace pickle {

using namespace std::string_literals;
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
inline AllowGlobal Allow(std::set<std::string> names) {
  return [names](const std::string& m, const std::string& n) {
    return names.count(m + "." + n) > 0;
  };
}
const AllowGlobal kAllowAll = [](const std::string&, const std::string&) { return true; };

inline std::string R(const ValuePtr& v) { return Repr(*v, 1 << 20); }

// What a caller does with protocol 0-3's spellings of bytes and sets, so that every
// protocol's decoding of kNested compares equal.
inline ValuePtr Normalize(const ValuePtr& v) {
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

inline ValuePtr SetOf(std::vector<ValuePtr> items) {
  auto s = std::make_shared<Value>();
  s->kind = K::kSet;
  s->items = std::move(items);
  return s;
}

inline ValuePtr Obj(ValuePtr cls, std::vector<ValuePtr> args, ValuePtr state = nullptr) {
  auto o = std::make_shared<Value>();
  o->kind = K::kObject;
  o->cls = std::move(cls);
  o->args = Value::Tuple(std::move(args));
  o->state = std::move(state);
  return o;
}

inline ValuePtr Persistent(ValuePtr id) {
  auto p = std::make_shared<Value>();
  p->kind = K::kPersistent;
  p->args = std::move(id);
  return p;
}

inline ValuePtr S(const std::string& s) { return Value::Str(s); }
inline ValuePtr I(int64_t i) { return Value::Int(i); }

}  // namespace pickle
}  // namespace dcpp
