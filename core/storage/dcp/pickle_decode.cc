// pickle::Decode: the decoder, one opcode at a time onto a stack of plain values, and the
// reference cycle check on what it built.
#include "core/storage/dcp/pickle.h"

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/base/error.h"
#include "core/storage/dcp/pickle_internal.h"
#include "core/storage/dcp/pickle_opcodes.h"
#include "core/storage/dcp/pickle_text.h"

namespace dcpp {
namespace pickle {
namespace {

std::string Hex(uint8_t b) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "0x%02x", b);
  return buf;
}

class Decoder {
 public:
  Decoder(const std::string& data, const AllowGlobal& allow, const std::string& where)
      : data_(data), allow_(allow), where_(where) {}

  ValuePtr Run() {
    while (pos_ < data_.size()) {
      op_pos_ = pos_;
      op_ = static_cast<uint8_t>(data_[pos_++]);
      if (op_ == STOP) return Stop();
      Step();
    }
    throw Error(StrCat("pickle: truncated at byte ", data_.size(), " in ", where_, " (no STOP)"));
  }

 private:
  // A new value; those that can hold others are remembered (see Alive()).
  ValuePtr New(Value::Kind k) {
    ValuePtr v = Make(k);
    using K = Value::Kind;
    if (k == K::kTuple || k == K::kList || k == K::kSet || k == K::kDict || k == K::kObject ||
        k == K::kPersistent) {
      made_.push_back(v);
    }
    return v;
  }

  [[noreturn]] void Fail(const std::string& what) const {
    throw Error(
        StrCat("pickle: ", what, " in ", where_, " (", OpName(op_), " at byte ", op_pos_, ")"));
  }
  // Fail, for the text helpers of pickle_text.h.
  TextFail TextFailure() const {
    return [this](const std::string& what) { Fail(what); };
  }

  // --- Reading the opcode's argument, never past the end.
  void Need(uint64_t n) const {
    if (n > data_.size() - pos_) {
      throw Error(StrCat("pickle: truncated at byte ", data_.size(), " in ", where_, " (",
                         OpName(op_), " at byte ", op_pos_, " needs ", n, " bytes, ",
                         data_.size() - pos_, " left)"));
    }
  }
  std::string Read(uint64_t n) {
    Need(n);
    std::string s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  template <typename T>
  T ReadLE() {
    Need(sizeof(T));
    uint64_t v = 0;
    for (size_t k = 0; k < sizeof(T); ++k) {
      v |= uint64_t{static_cast<uint8_t>(data_[pos_ + k])} << (8 * k);
    }
    pos_ += sizeof(T);
    return static_cast<T>(v);
  }
  std::string ReadLine() {
    const size_t nl = data_.find('\n', pos_);
    if (nl == std::string::npos) {
      throw Error(StrCat("pickle: truncated at byte ", data_.size(), " in ", where_, " (",
                         OpName(op_), " at byte ", op_pos_, " has no end of line)"));
    }
    std::string s = data_.substr(pos_, nl - pos_);
    pos_ = nl + 1;
    return s;
  }
  uint64_t ReadLength(int bytes) {  // unsigned, except BINSTRING/LONG4's signed int32
    switch (bytes) {
      case 1:
        return ReadLE<uint8_t>();
      case 4:
        return ReadLE<uint32_t>();
      default:
        return ReadLE<uint64_t>();
    }
  }
  uint64_t ReadSignedLength() {
    const int32_t n = ReadLE<int32_t>();
    if (n < 0) Fail(StrCat("negative length ", n));
    return static_cast<uint64_t>(n);
  }

  // --- The stack. Values above the innermost MARK are the only ones an opcode may take.
  size_t Fence() const { return marks_.empty() ? 0 : marks_.back(); }
  void Push(ValuePtr v) { stack_.push_back(std::move(v)); }
  ValuePtr Pop() {
    if (stack_.size() <= Fence()) Fail("stack underflow");
    ValuePtr v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  const ValuePtr& Top() {
    if (stack_.size() <= Fence()) Fail("stack underflow");
    return stack_.back();
  }
  std::vector<ValuePtr> PopMark() {
    if (marks_.empty()) Fail("no MARK to pop to");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<ValuePtr> items(std::make_move_iterator(stack_.begin() + mark),
                                std::make_move_iterator(stack_.end()));
    stack_.resize(mark);
    return items;
  }

  ValuePtr Stop() {
    if (!marks_.empty()) Fail(StrCat(marks_.size(), " MARK(s) still open"));
    if (stack_.size() != 1) Fail(StrCat(stack_.size(), " values on the stack, expected 1"));
    if (pos_ != data_.size()) {
      Fail(StrCat(data_.size() - pos_, " trailing bytes after STOP"));
    }
    return std::move(stack_.back());
  }

  void Memo(uint64_t index) { memo_[index] = Top(); }
  void Get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) Fail(StrCat("memo index ", index, " is not defined"));
    Push(it->second);
  }
  uint64_t TextIndex() {
    int64_t i;
    const std::string line = ReadLine();
    if (!ParseInt64(line, &i) || i < 0) Fail(StrCat("bad memo index '", line, "'"));
    return static_cast<uint64_t>(i);
  }

  void PushInt(int64_t v) {
    auto r = New(Value::Kind::kInt);
    r->i = v;
    Push(std::move(r));
  }
  void PushText(Value::Kind k, std::string s) {
    if (k == Value::Kind::kStr && !IsUtf8(s.data(), s.size())) Fail("invalid UTF-8 in a str");
    auto r = New(k);
    r->str = std::move(s);
    Push(std::move(r));
  }

  // LONG1/LONG4: two's complement, little endian.
  void PushLong(uint64_t n) {
    const std::string b = Read(n);
    uint64_t v = 0;
    for (size_t k = 0; k < n && k < 8; ++k) v |= uint64_t{static_cast<uint8_t>(b[k])} << (8 * k);
    const bool neg = n > 0 && (static_cast<uint8_t>(b[n - 1]) & 0x80);
    if (n < 8 && neg) v |= ~uint64_t{0} << (8 * n);
    // Beyond 8 bytes, only sign extension of the low 64 bits fits.
    const bool low_neg = v >> 63;
    for (size_t k = 8; k < n; ++k) {
      if (static_cast<uint8_t>(b[k]) != (low_neg ? 0xff : 0x00)) {
        Fail(StrCat("integer of ", n, " bytes does not fit in 64 bits"));
      }
    }
    PushInt(static_cast<int64_t>(v));
  }

  void PushTextInt(bool is_long) {
    std::string line = ReadLine();
    if (!is_long && (line == "00" || line == "01")) {
      auto r = New(Value::Kind::kBool);
      r->b = line == "01";
      return Push(std::move(r));
    }
    if (is_long && !line.empty() && line.back() == 'L') line.pop_back();
    int64_t v;
    if (!ParseInt64(line, &v)) Fail(StrCat("'", line, "' is not an integer that fits in 64 bits"));
    PushInt(v);
  }

  void PushFloat(double f) {
    auto r = New(Value::Kind::kFloat);
    r->f = f;
    Push(std::move(r));
  }

  void PushGlobal(std::string module, std::string name) {
    if (proto_ < 3) {  // Python 3 reads Python 2's names (pickle's fix_imports).
      if (module == "__builtin__") module = "builtins";
      if (module == "copy_reg") module = "copyreg";
    }
    if (!allow_ || !allow_(module, name)) {
      Fail(StrCat("global '", module, ".", name, "' is not allowed"));
    }
    Push(Value::Global(std::move(module), std::move(name)));
  }

  void PushObject(ValuePtr cls, ValuePtr args) {
    if (!cls->Is(Value::Kind::kGlobal)) {
      Fail(StrCat("calls a ", KindName(cls->kind), ", not a global"));
    }
    if (!args->Is(Value::Kind::kTuple)) {
      Fail(StrCat("arguments of ", cls->module, ".", cls->name, " are a ", KindName(args->kind),
                  ", not a tuple"));
    }
    auto r = New(Value::Kind::kObject);
    r->cls = std::move(cls);
    r->args = std::move(args);
    Push(std::move(r));
  }

  void Append(std::vector<ValuePtr> items) {
    Value& target = *Top();
    if (!target.Is(Value::Kind::kList) && !target.Is(Value::Kind::kObject)) {
      Fail(StrCat("cannot append to a ", KindName(target.kind)));
    }
    for (auto& v : items) target.items.push_back(std::move(v));
  }
  void SetItems(std::vector<ValuePtr> kv) {
    if (kv.size() % 2) Fail(StrCat("odd number of values (", kv.size(), ") for key, value pairs"));
    Value& target = *Top();
    if (!target.Is(Value::Kind::kDict) && !target.Is(Value::Kind::kObject)) {
      Fail(StrCat("cannot set items of a ", KindName(target.kind)));
    }
    for (size_t k = 0; k < kv.size(); k += 2) {
      target.dict.emplace_back(std::move(kv[k]), std::move(kv[k + 1]));
    }
  }
  ValuePtr MakeDict(std::vector<ValuePtr> kv) {
    if (kv.size() % 2) Fail(StrCat("odd number of values (", kv.size(), ") for key, value pairs"));
    auto d = New(Value::Kind::kDict);
    for (size_t k = 0; k < kv.size(); k += 2) {
      d->dict.emplace_back(std::move(kv[k]), std::move(kv[k + 1]));
    }
    return d;
  }
  ValuePtr MakeSeq(Value::Kind k, std::vector<ValuePtr> items) {
    auto r = New(k);
    r->items = std::move(items);
    return r;
  }

  // One opcode, read as a table: most are one line.
  // clang-format off
  void Step() {
    using K = Value::Kind;
    switch (op_) {
      case PROTO: {
        const int p = ReadLE<uint8_t>();
        if (p > kHighestProtocol) Fail(StrCat("unsupported protocol ", p));
        proto_ = p;
        return;
      }
      case FRAME: {
        const uint64_t n = ReadLE<uint64_t>();
        Need(n);  // the frame's opcodes follow inline
        return;
      }
      case MARK: marks_.push_back(stack_.size()); return;
      case POP:
        // As CPython: with nothing above the innermost MARK, POP drops the MARK.
        if (!marks_.empty() && marks_.back() == stack_.size()) {
          marks_.pop_back();
        } else {
          Pop();
        }
        return;
      case POP_MARK: PopMark(); return;
      case DUP: Push(ValuePtr(Top())); return;
      case PUT: Memo(TextIndex()); return;
      case BINPUT: Memo(ReadLE<uint8_t>()); return;
      case LONG_BINPUT: Memo(ReadLE<uint32_t>()); return;
      case MEMOIZE: Memo(memo_.size()); return;
      case GET: Get(TextIndex()); return;
      case BINGET: Get(ReadLE<uint8_t>()); return;
      case LONG_BINGET: Get(ReadLE<uint32_t>()); return;
      case NONE: Push(Value::None()); return;
      case NEWTRUE: Push(Value::Bool(true)); return;
      case NEWFALSE: Push(Value::Bool(false)); return;
      case INT: PushTextInt(false); return;
      case LONG: PushTextInt(true); return;
      case BININT: PushInt(ReadLE<int32_t>()); return;
      case BININT1: PushInt(ReadLE<uint8_t>()); return;
      case BININT2: PushInt(ReadLE<uint16_t>()); return;
      case LONG1: PushLong(ReadLE<uint8_t>()); return;
      case LONG4: PushLong(ReadSignedLength()); return;
      case FLOAT: {
        const std::string line = ReadLine();
        double f = 0;
        const auto r = std::from_chars(line.data(), line.data() + line.size(), f);
        if (line.empty() || r.ec != std::errc() || r.ptr != line.data() + line.size()) {
          Fail(StrCat("'", line, "' is not a float"));
        }
        return PushFloat(f);
      }
      case BINFLOAT: {
        uint64_t bits = 0;
        const std::string b = Read(8);
        for (int k = 0; k < 8; ++k) bits = (bits << 8) | static_cast<uint8_t>(b[k]);
        double f;
        std::memcpy(&f, &bits, sizeof(f));
        return PushFloat(f);
      }
      case STRING: return PushText(K::kBytes, UnquoteString(ReadLine(), TextFailure()));
      case BINSTRING: return PushText(K::kBytes, Read(ReadSignedLength()));
      case SHORT_BINSTRING: return PushText(K::kBytes, Read(ReadLength(1)));
      case UNICODE: return PushText(K::kStr, RawUnicodeEscape(ReadLine(), TextFailure()));
      case SHORT_BINUNICODE: return PushText(K::kStr, Read(ReadLength(1)));
      case BINUNICODE: return PushText(K::kStr, Read(ReadLength(4)));
      case BINUNICODE8: return PushText(K::kStr, Read(ReadLength(8)));
      case SHORT_BINBYTES: return PushText(K::kBytes, Read(ReadLength(1)));
      case BINBYTES: return PushText(K::kBytes, Read(ReadLength(4)));
      case BINBYTES8:
      case BYTEARRAY8: return PushText(K::kBytes, Read(ReadLength(8)));
      case EMPTY_TUPLE: return Push(New(K::kTuple));
      case EMPTY_LIST: return Push(New(K::kList));
      case EMPTY_DICT: return Push(New(K::kDict));
      case EMPTY_SET: return Push(New(K::kSet));
      case TUPLE: return Push(MakeSeq(K::kTuple, PopMark()));
      case TUPLE1:
      case TUPLE2:
      case TUPLE3: {
        std::vector<ValuePtr> items(op_ - TUPLE1 + 1);
        for (size_t k = items.size(); k-- > 0;) items[k] = Pop();
        return Push(MakeSeq(K::kTuple, std::move(items)));
      }
      case LIST: return Push(MakeSeq(K::kList, PopMark()));
      case DICT: return Push(MakeDict(PopMark()));
      case FROZENSET: return Push(MakeSeq(K::kSet, PopMark()));
      case APPEND: {
        ValuePtr v = Pop();
        return Append({std::move(v)});
      }
      case APPENDS: return Append(PopMark());
      case SETITEM: {
        ValuePtr v = Pop();
        ValuePtr k = Pop();
        return SetItems({std::move(k), std::move(v)});
      }
      case SETITEMS: return SetItems(PopMark());
      case ADDITEMS: {
        std::vector<ValuePtr> items = PopMark();
        Value& target = *Top();
        if (!target.Is(K::kSet) && !target.Is(K::kObject)) {
          Fail(StrCat("cannot add items to a ", KindName(target.kind)));
        }
        for (auto& v : items) target.items.push_back(std::move(v));
        return;
      }
      case GLOBAL: {
        std::string module = ReadLine();
        std::string name = ReadLine();
        return PushGlobal(std::move(module), std::move(name));
      }
      case STACK_GLOBAL: {
        ValuePtr name = Pop();
        ValuePtr module = Pop();
        if (!module->Is(K::kStr) || !name->Is(K::kStr)) {
          Fail(StrCat("module and name are a ", KindName(module->kind), " and a ",
                      KindName(name->kind), ", not str"));
        }
        return PushGlobal(module->str, name->str);
      }
      case REDUCE:
      case NEWOBJ: {
        ValuePtr args = Pop();
        ValuePtr callable = Pop();
        return PushObject(std::move(callable), std::move(args));
      }
      case NEWOBJ_EX: {
        ValuePtr kwargs = Pop();
        ValuePtr args = Pop();
        ValuePtr cls = Pop();
        if (!kwargs->Is(K::kDict) || !kwargs->dict.empty()) {
          Fail(StrCat("keyword arguments (", Repr(*kwargs, 60), ") are not supported"));
        }
        return PushObject(std::move(cls), std::move(args));
      }
      case BUILD: {
        ValuePtr state = Pop();
        Value& target = *Top();
        if (!target.Is(K::kObject)) {
          Fail(StrCat("cannot set the state of a ", KindName(target.kind)));
        }
        target.state = std::move(state);  // the last BUILD wins
        return;
      }
      case PERSID: {
        std::string id = ReadLine();
        for (char c : id) {
          if (static_cast<uint8_t>(c) >= 0x80) Fail("a protocol 0 persistent id must be ASCII");
        }
        auto r = New(K::kPersistent);
        r->args = Value::Str(std::move(id));
        return Push(std::move(r));
      }
      case BINPERSID: {
        auto r = New(K::kPersistent);
        r->args = Pop();
        return Push(std::move(r));
      }
      default: {
        const char* name = OpName(op_);
        if (name) {
          throw Error(StrCat("pickle: opcode ", Hex(op_), " (", name, ") at byte ", op_pos_,
                             " is not supported in ", where_));
        }
        throw Error(StrCat("pickle: unknown opcode ", Hex(op_), " at byte ", op_pos_, " in ",
                           where_));
      }
    }
  }
  // clang-format on

  const std::string& data_;
  const AllowGlobal& allow_;
  const std::string& where_;

 public:
  // Every container the decoder made that is still alive, wherever it is held (the stack, the memo,
  // the result, or only a cycle of its own after an error or a POP), for the cycle check and
  // cleanup: a cycle among values the decoder no longer reaches would otherwise leak.
  std::vector<ValuePtr> Alive() const {
    std::vector<ValuePtr> out;
    for (const auto& w : made_) {
      if (ValuePtr v = w.lock()) out.push_back(std::move(v));
    }
    return out;
  }

 private:
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  uint8_t op_ = 0;
  int proto_ = 0;
  std::vector<ValuePtr> stack_;
  std::vector<size_t> marks_;  // stack sizes at each open MARK
  std::unordered_map<uint64_t, ValuePtr> memo_;
  std::vector<std::weak_ptr<Value>> made_;  // every container New() made (see Alive())
};

}  // namespace

ValuePtr Decode(const std::string& data, const AllowGlobal& allow, const std::string& where) {
  Decoder d(data, allow, where);
  ValuePtr v;
  try {
    v = d.Run();
  } catch (...) {
    Unlink(d.Alive());
    throw;
  }
  const std::vector<ValuePtr> alive = d.Alive();
  if (HasCycle(alive)) {
    Unlink(alive);
    throw Error(StrCat("pickle: a container holds itself (a reference cycle) in ", where,
                       "; dcpp reads only acyclic pickles"));
  }
  return v;
}

}  // namespace pickle
}  // namespace dcpp
