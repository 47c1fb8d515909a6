// pickle::Writer: emits pickle opcodes as CPython's pickler writes them, less the memo.
#include "core/storage/dcp/pickle.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/base/error.h"
#include "core/storage/dcp/pickle_opcodes.h"
#include "core/storage/dcp/pickle_text.h"

namespace dcpp {
namespace pickle {
namespace {

constexpr int kBatchSize = 1000;  // values per APPENDS/SETITEMS/ADDITEMS, as CPython writes
constexpr int kMaxPutDepth = 1000;

}  // namespace

Writer::Writer(int protocol) : protocol_(protocol) {
  DCPP_CHECK(protocol >= 2 && protocol <= kHighestProtocol, "pickle::Writer: protocol ", protocol,
             " is not supported (2 to ", kHighestProtocol, ")");
  Op(PROTO);
  Op(static_cast<uint8_t>(protocol));
}

void Writer::Op(uint8_t op) { out_.push_back(static_cast<char>(op)); }

template <typename T>
void Writer::Raw(T v) {
  const auto u = static_cast<uint64_t>(v);
  for (size_t k = 0; k < sizeof(T); ++k) out_.push_back(static_cast<char>((u >> (8 * k)) & 0xff));
}

Writer& Writer::None() { return Op(NONE), *this; }
Writer& Writer::Bool(bool v) { return Op(v ? NEWTRUE : NEWFALSE), *this; }

Writer& Writer::Int(int64_t v) {
  if (v >= 0 && v <= 0xff) {
    Op(BININT1);
    Raw<uint8_t>(v);
  } else if (v >= 0 && v <= 0xffff) {
    Op(BININT2);
    Raw<uint16_t>(v);
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    Op(BININT);
    Raw<int32_t>(v);
  } else {
    // Python's encode_long: bit_length / 8 + 1 two's complement bytes, one fewer for a
    // negative number whose top byte would be pure sign.
    const auto u = static_cast<uint64_t>(v);
    const uint64_t magnitude = v < 0 ? 0 - u : u;
    const size_t n = (64 - __builtin_clzll(magnitude)) / 8 + 1;
    std::string b;
    for (size_t k = 0; k < n; ++k) {
      b.push_back(static_cast<char>(k < 8 ? (u >> (8 * k)) & 0xff : v < 0 ? 0xff : 0));
    }
    if (v < 0 && n > 1 && static_cast<uint8_t>(b[n - 1]) == 0xff && (b[n - 2] & 0x80)) {
      b.pop_back();
    }
    Op(LONG1);
    Raw<uint8_t>(b.size());
    out_ += b;
  }
  return *this;
}

Writer& Writer::Float(double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  Op(BINFLOAT);
  for (int k = 7; k >= 0; --k) out_.push_back(static_cast<char>((bits >> (8 * k)) & 0xff));
  return *this;
}

Writer& Writer::Str(const std::string& utf8) {
  const uint64_t n = utf8.size();
  if (protocol_ >= 4 && n < 256) {
    Op(SHORT_BINUNICODE);
    Raw<uint8_t>(n);
  } else if (protocol_ >= 4 && n > 0xffffffffu) {
    Op(BINUNICODE8);
    Raw<uint64_t>(n);
  } else {
    DCPP_CHECK(n <= 0xffffffffu, "pickle::Writer: a str of ", n, " bytes needs protocol 4");
    Op(BINUNICODE);
    Raw<uint32_t>(n);
  }
  out_ += utf8;
  return *this;
}

Writer& Writer::Bytes(const std::string& data) {
  const uint64_t n = data.size();
  if (protocol_ < 3) {
    // What CPython 3 writes for bytes under protocol 2, b'' included: CPython writes
    // __builtin__.bytes() for that one, which torch.load(weights_only=True) refuses.
    std::string text;
    for (char c : data) AppendUtf8(&text, static_cast<uint8_t>(c));
    return Global("_codecs", "encode").Str(text).Str("latin1").Tuple(2).Reduce();
  }
  if (n < 256) {
    Op(SHORT_BINBYTES);
    Raw<uint8_t>(n);
  } else if (protocol_ >= 4 && n > 0xffffffffu) {
    Op(BINBYTES8);
    Raw<uint64_t>(n);
  } else {
    DCPP_CHECK(n <= 0xffffffffu, "pickle::Writer: bytes of ", n, " bytes need protocol 4");
    Op(BINBYTES);
    Raw<uint32_t>(n);
  }
  out_ += data;
  return *this;
}

Writer& Writer::Global(const std::string& module, const std::string& name) {
  DCPP_CHECK(module.find('\n') == std::string::npos && name.find('\n') == std::string::npos,
             "pickle::Writer: a global's module and name cannot contain a newline");
  Op(GLOBAL);
  out_ += module + "\n" + name + "\n";
  return *this;
}

Writer& Writer::Mark() { return Op(MARK), *this; }
Writer& Writer::Tuple() { return Op(TUPLE), *this; }

Writer& Writer::Tuple(int n) {
  static const uint8_t kOps[] = {EMPTY_TUPLE, TUPLE1, TUPLE2, TUPLE3};
  DCPP_CHECK(n >= 0 && n <= 3, "pickle::Writer: Tuple(", n, "): use Mark() and Tuple()");
  return Op(kOps[n]), *this;
}

Writer& Writer::EmptyList() { return Op(EMPTY_LIST), *this; }
Writer& Writer::Appends() { return Op(APPENDS), *this; }
Writer& Writer::Append() { return Op(APPEND), *this; }
Writer& Writer::EmptyDict() { return Op(EMPTY_DICT), *this; }
Writer& Writer::SetItems() { return Op(SETITEMS), *this; }
Writer& Writer::SetItem() { return Op(SETITEM), *this; }
Writer& Writer::Reduce() { return Op(REDUCE), *this; }
Writer& Writer::NewObj() { return Op(NEWOBJ), *this; }
Writer& Writer::Build() { return Op(BUILD), *this; }
Writer& Writer::BinPersId() { return Op(BINPERSID), *this; }

Writer& Writer::Put(const Value& v) {
  Put(v, 0);
  return *this;
}

void Writer::Put(const Value& v, int depth) {
  DCPP_CHECK(depth <= kMaxPutDepth, "pickle::Writer: value nested deeper than ", kMaxPutDepth,
             " (a cycle?)");
  auto put = [&](const ValuePtr& c) {
    DCPP_CHECK(c, "pickle::Writer: null value inside a ", KindName(v.kind));
    Put(*c, depth + 1);
  };
  // Batches as CPython's C pickler (_pickle.c) writes them: MARK ... APPENDS (SETITEMS,
  // ADDITEMS) per 1000 values, where
  //   kList  (batch_list_exact): a list of one value gets a lone APPEND;
  //   kDict  (batch_dict_exact): a dict of one pair gets a lone SETITEM, and a size that is
  //          a multiple of 1000 ends with an empty batch (its do-while);
  //   kSet   (save_set): never a lone op, the same empty last batch;
  //   kItems (batch_list/batch_dict, an object's items): any last batch of one is lone.
  enum Style { kList, kDict, kSet, kItems };
  auto batches = [&](size_t n, Style style, uint8_t single, uint8_t many,
                     const std::function<void(size_t)>& put_one) {
    if (n == 0) return;
    if (n == 1 && style != kSet) return put_one(0), Op(single);
    for (size_t start = 0;; start += kBatchSize) {
      const size_t end = std::min(n, start + kBatchSize);
      if (end - start == 1 && style == kItems) return put_one(start), Op(single);
      Mark();
      for (size_t k = start; k < end; ++k) put_one(k);
      Op(many);
      if (end - start < kBatchSize || (end == n && (style == kList || style == kItems))) return;
    }
  };
  auto appends = [&](const std::vector<ValuePtr>& items, Style style) {
    batches(items.size(), style, APPEND, APPENDS, [&](size_t k) { put(items[k]); });
  };
  auto setitems = [&](const std::vector<std::pair<ValuePtr, ValuePtr>>& d, Style style) {
    batches(d.size(), style, SETITEM, SETITEMS, [&](size_t k) {
      put(d[k].first);
      put(d[k].second);
    });
  };
  using K = Value::Kind;
  switch (v.kind) {
    case K::kNone:
      None();
      return;
    case K::kBool:
      Bool(v.b);
      return;
    case K::kInt:
      Int(v.i);
      return;
    case K::kFloat:
      Float(v.f);
      return;
    case K::kStr:
      Str(v.str);
      return;
    case K::kBytes:
      Bytes(v.str);
      return;
    case K::kTuple: {
      const size_t n = v.items.size();
      if (n > 3) Mark();
      for (const auto& c : v.items) put(c);
      n > 3 ? Tuple() : Tuple(static_cast<int>(n));
      return;
    }
    case K::kList:
      EmptyList();
      appends(v.items, kList);
      return;
    case K::kDict:
      EmptyDict();
      setitems(v.dict, kDict);
      return;
    case K::kSet:
      if (protocol_ >= 4) {
        Op(EMPTY_SET);
        batches(v.items.size(), kSet, ADDITEMS, ADDITEMS, [&](size_t k) { put(v.items[k]); });
      } else {  // set([items]), with builtins named as CPython names them in the protocol
        Global(protocol_ < 3 ? "__builtin__" : "builtins", "set");
        EmptyList();
        appends(v.items, kList);
        Tuple(1);
        Reduce();
      }
      return;
    case K::kGlobal:
      Global(v.module, v.name);
      return;
    case K::kObject:
      DCPP_CHECK(v.cls && v.args && v.args->Is(K::kTuple),
                 "pickle::Writer: an object needs a class and a tuple of arguments");
      put(v.cls);
      put(v.args);
      Reduce();
      appends(v.items, kItems);
      setitems(v.dict, kItems);
      if (v.state) {
        put(v.state);
        Build();
      }
      return;
    case K::kPersistent:
      put(v.args);
      BinPersId();
      return;
  }
}

std::string Writer::Finish() {
  Op(STOP);
  std::string r = std::move(out_);
  out_.clear();
  return r;
}

}  // namespace pickle
}  // namespace dcpp
