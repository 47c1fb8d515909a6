#include "core/storage/dcp/pickle.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "core/base/error.h"

namespace dcpp {
namespace pickle {
namespace {

// Opcodes, by the names pickletools uses.
// clang-format off
#define DCPP_PICKLE_OPCODES(X)                                                                     \
  X(MARK, '(') X(STOP, '.') X(POP, '0') X(POP_MARK, '1') X(DUP, '2') X(FLOAT, 'F')                 \
  X(INT, 'I') X(BININT, 'J') X(BININT1, 'K') X(LONG, 'L') X(BININT2, 'M') X(NONE, 'N')             \
  X(PERSID, 'P') X(BINPERSID, 'Q') X(REDUCE, 'R') X(STRING, 'S') X(BINSTRING, 'T')                 \
  X(SHORT_BINSTRING, 'U') X(UNICODE, 'V') X(BINUNICODE, 'X') X(APPEND, 'a') X(BUILD, 'b')          \
  X(GLOBAL, 'c') X(DICT, 'd') X(EMPTY_DICT, '}') X(APPENDS, 'e') X(GET, 'g') X(BINGET, 'h')        \
  X(INST, 'i') X(LONG_BINGET, 'j') X(LIST, 'l') X(EMPTY_LIST, ']') X(OBJ, 'o') X(PUT, 'p')         \
  X(BINPUT, 'q') X(LONG_BINPUT, 'r') X(SETITEM, 's') X(TUPLE, 't') X(EMPTY_TUPLE, ')')             \
  X(SETITEMS, 'u') X(BINFLOAT, 'G')                                                                \
  /* protocol 2 */                                                                                 \
  X(PROTO, 0x80) X(NEWOBJ, 0x81) X(EXT1, 0x82) X(EXT2, 0x83) X(EXT4, 0x84) X(TUPLE1, 0x85)         \
  X(TUPLE2, 0x86) X(TUPLE3, 0x87) X(NEWTRUE, 0x88) X(NEWFALSE, 0x89) X(LONG1, 0x8a)                \
  X(LONG4, 0x8b)                                                                                   \
  /* protocol 3 */                                                                                 \
  X(BINBYTES, 'B') X(SHORT_BINBYTES, 'C')                                                          \
  /* protocol 4 */                                                                                 \
  X(SHORT_BINUNICODE, 0x8c) X(BINUNICODE8, 0x8d) X(BINBYTES8, 0x8e) X(EMPTY_SET, 0x8f)             \
  X(ADDITEMS, 0x90) X(FROZENSET, 0x91) X(NEWOBJ_EX, 0x92) X(STACK_GLOBAL, 0x93)                    \
  X(MEMOIZE, 0x94) X(FRAME, 0x95)                                                                  \
  /* protocol 5 */                                                                                 \
  X(BYTEARRAY8, 0x96) X(NEXT_BUFFER, 0x97) X(READONLY_BUFFER, 0x98)
// clang-format on

#define DCPP_ENUM(name, code) name = code,
enum : uint8_t { DCPP_PICKLE_OPCODES(DCPP_ENUM) };
#undef DCPP_ENUM

// The opcode's name, or null for a byte that is none.
const char* OpName(uint8_t op) {
  switch (op) {
#define DCPP_CASE(name, code) \
  case name:                  \
    return #name;
    DCPP_PICKLE_OPCODES(DCPP_CASE)
#undef DCPP_CASE
  }
  return nullptr;
}

constexpr int kHighestProtocol = 5;
constexpr int kBatchSize = 1000;  // values per APPENDS/SETITEMS/ADDITEMS, as CPython writes
constexpr int kMaxPutDepth = 1000;

std::string Hex(uint8_t b) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "0x%02x", b);
  return buf;
}

ValuePtr Make(Value::Kind k) {
  auto v = std::make_shared<Value>();
  v->kind = k;
  return v;
}

void AppendUtf8(std::string* out, uint32_t cp) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out->push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

// Well-formed UTF-8, lone surrogates included: Python writes str with 'surrogatepass'.
bool IsUtf8(const char* s, size_t n) {
  const auto* p = reinterpret_cast<const unsigned char*>(s);
  for (size_t i = 0; i < n;) {
    const unsigned c = p[i];
    size_t len;
    uint32_t min;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, min = 0x10000;
    } else {
      return false;
    }
    if (n - i < len) return false;
    uint32_t cp = c & (0x7f >> len);
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff) return false;
    i += len;
  }
  return true;
}

// Decimal integer with an optional sign, as protocol 0 writes them.
bool ParseInt64(const std::string& s, int64_t* out) {
  size_t i = 0;
  bool neg = false;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
  if (i == s.size()) return false;
  const uint64_t limit = neg ? uint64_t{1} << 63 : (uint64_t{1} << 63) - 1;
  uint64_t v = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    const unsigned d = s[i] - '0';
    if (v > (limit - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = neg ? static_cast<int64_t>(0 - v) : static_cast<int64_t>(v);
  return true;
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

  // STRING: a Python 2 str literal, quoted, with C-like escapes (codecs.escape_decode).
  std::string UnquoteString(const std::string& q) {
    if (q.size() < 2 || q.front() != q.back() || (q.front() != '\'' && q.front() != '"')) {
      Fail("the STRING argument must be quoted");
    }
    std::string out;
    for (size_t i = 1; i + 1 < q.size(); ++i) {
      if (q[i] != '\\') {
        out.push_back(q[i]);
        continue;
      }
      if (++i + 1 >= q.size()) Fail("trailing \\ in a STRING");
      static const char kFrom[] = "abfnrtv\\'\"", kTo[] = "\a\b\f\n\r\t\v\\'\"";
      const char c = q[i];
      if (const char* e = std::strchr(kFrom, c); e && c) {
        out.push_back(kTo[e - kFrom]);
      } else if (c == 'x') {
        const int hi = i + 1 + 1 < q.size() ? HexDigit(q[i + 1]) : -1;  // inside the quotes
        const int lo = hi >= 0 && i + 2 + 1 < q.size() ? HexDigit(q[i + 2]) : -1;
        if (lo < 0) Fail("invalid \\x escape in a STRING");
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
      } else if (c >= '0' && c <= '7') {  // up to three octal digits
        unsigned v = c - '0';
        for (int k = 0; k < 2 && i + 1 + 1 < q.size() && q[i + 1] >= '0' && q[i + 1] <= '7'; ++k) {
          v = v * 8 + (q[++i] - '0');
        }
        out.push_back(static_cast<char>(v & 0xff));
      } else {  // not an escape: kept as written
        out.push_back('\\');
        out.push_back(c);
      }
    }
    return out;
  }
  static int HexDigit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // UNICODE: 'raw-unicode-escape', i.e. latin-1 bytes where \uXXXX and \UXXXXXXXX (after an
  // odd number of backslashes) stand for code points. Returns UTF-8.
  std::string RawUnicodeEscape(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size();) {
      const auto c = static_cast<uint8_t>(s[i]);
      if (c != '\\') {
        AppendUtf8(&out, c);
        ++i;
        continue;
      }
      size_t run = 0;
      while (i < s.size() && s[i] == '\\') ++run, ++i;
      out.append(run, '\\');
      if (run % 2 == 0 || i == s.size() || (s[i] != 'u' && s[i] != 'U')) continue;
      out.pop_back();
      const size_t digits = s[i] == 'u' ? 4 : 8;
      ++i;
      if (s.size() - i < digits) Fail("truncated \\u escape in a UNICODE");
      uint32_t cp = 0;
      for (size_t k = 0; k < digits; ++k) {
        const int d = HexDigit(s[i + k]);
        if (d < 0) Fail("invalid \\u escape in a UNICODE");
        cp = cp * 16 + d;
      }
      if (cp > 0x10ffff) Fail("\\U escape beyond U+10FFFF in a UNICODE");
      AppendUtf8(&out, cp);
      i += digits;
    }
    return out;
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
      case STRING: return PushText(K::kBytes, UnquoteString(ReadLine()));
      case BINSTRING: return PushText(K::kBytes, Read(ReadSignedLength()));
      case SHORT_BINSTRING: return PushText(K::kBytes, Read(ReadLength(1)));
      case UNICODE: return PushText(K::kStr, RawUnicodeEscape(ReadLine()));
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

// --- Repr.

// Python's repr(float): the shortest digits that read back to the same double, in fixed
// notation for exponents -4..15 and scientific otherwise.
std::string FloatRepr(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f < 0 ? "-inf" : "inf";
  char buf[40];
  for (int prec = 1; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof(buf), "%.*e", prec - 1, f);
    if (std::strtod(buf, nullptr) == f) break;
  }
  // buf: [-]d[.ddd]e[+-]XX
  std::string s = buf;
  const bool neg = s[0] == '-';
  if (neg) s.erase(0, 1);
  const size_t e = s.find('e');
  const int exp = std::atoi(s.c_str() + e + 1);
  std::string digits = s.substr(0, e);
  if (digits.size() > 1) digits.erase(1, 1);  // drop the '.'
  std::string out = neg ? "-" : "";
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out += "0." + std::string(-exp - 1, '0') + digits;
    } else if (static_cast<size_t>(exp) + 1 >= digits.size()) {
      out += digits + std::string(exp + 1 - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char ebuf[16];
    std::snprintf(ebuf, sizeof(ebuf), "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    out += ebuf;
  }
  return out;
}

void QuoteTo(const std::string& s, bool bytes, std::string* out) {
  const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = dq ? '"' : '\'';
  if (bytes) out->push_back('b');
  out->push_back(q);
  for (char ch : s) {
    const auto c = static_cast<uint8_t>(ch);
    if (ch == q || ch == '\\') {
      out->push_back('\\');
      out->push_back(ch);
    } else if (ch == '\n') {
      *out += "\\n";
    } else if (ch == '\r') {
      *out += "\\r";
    } else if (ch == '\t') {
      *out += "\\t";
    } else if (c < 0x20 || c == 0x7f || (bytes && c >= 0x80)) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      *out += buf;
    } else {
      out->push_back(ch);  // UTF-8 of a str stays as it is
    }
  }
  out->push_back(q);
}

class Printer {
 public:
  explicit Printer(size_t limit) : limit_(limit) {}

  void Print(const Value* v, int depth) {
    if (Full()) return;
    if (!v) return out_.append("<null>"), void();
    if (depth > 100) return out_.append("..."), void();
    using K = Value::Kind;
    switch (v->kind) {
      case K::kNone:
        out_ += "None";
        return;
      case K::kBool:
        out_ += v->b ? "True" : "False";
        return;
      case K::kInt:
        out_ += std::to_string(v->i);
        return;
      case K::kFloat:
        out_ += FloatRepr(v->f);
        return;
      case K::kStr:
        QuoteTo(v->str, false, &out_);
        return;
      case K::kBytes:
        if (v->str.size() > 64) {
          QuoteTo(v->str.substr(0, 32), true, &out_);
          out_ += StrCat("...(", v->str.size(), " bytes)");
        } else {
          QuoteTo(v->str, true, &out_);
        }
        return;
      case K::kTuple:
        Seq("(", v->items, v->items.size() == 1 ? ",)" : ")", depth);
        return;
      case K::kList:
        Seq("[", v->items, "]", depth);
        return;
      case K::kSet:
        if (v->items.empty()) return out_.append("set()"), void();
        Seq("{", v->items, "}", depth);
        return;
      case K::kDict:
        Dict(v->dict, depth);
        return;
      case K::kGlobal:
        out_ += v->module + "." + v->name;
        return;
      case K::kPersistent:
        out_ += "persistent_id(";
        Print(v->args.get(), depth + 1);
        out_ += ")";
        return;
      case K::kObject:
        Object(*v, depth);
        return;
    }
  }

  std::string Take() {
    if (out_.size() <= limit_) return std::move(out_);
    size_t n = limit_ >= 3 ? limit_ - 3 : 0;
    while (n > 0 && (static_cast<uint8_t>(out_[n]) & 0xc0) == 0x80) --n;  // whole characters
    return out_.substr(0, n) + std::string("...").substr(0, limit_ - std::min(limit_, n));
  }

 private:
  bool Full() const { return out_.size() > limit_; }

  void Seq(const char* open, const std::vector<ValuePtr>& items, const char* close, int depth) {
    out_ += open;
    for (size_t k = 0; k < items.size() && !Full(); ++k) {
      if (k) out_ += ", ";
      Print(items[k].get(), depth + 1);
    }
    out_ += close;
  }
  void Dict(const std::vector<std::pair<ValuePtr, ValuePtr>>& d, int depth) {
    out_ += "{";
    for (size_t k = 0; k < d.size() && !Full(); ++k) {
      if (k) out_ += ", ";
      Print(d[k].first.get(), depth + 1);
      out_ += ": ";
      Print(d[k].second.get(), depth + 1);
    }
    out_ += "}";
  }
  // module.name(args..., [appended items], {set items}, key=value... | state=...)
  void Object(const Value& v, int depth) {
    Print(v.cls.get(), depth + 1);
    out_ += "(";
    bool first = true;
    auto sep = [&] {
      if (!first) out_ += ", ";
      first = false;
    };
    if (v.args) {
      for (const auto& a : v.args->items) {
        if (Full()) break;
        sep();
        Print(a.get(), depth + 1);
      }
    }
    if (!v.items.empty()) sep(), Seq("[", v.items, "]", depth);
    if (!v.dict.empty()) sep(), Dict(v.dict, depth);
    if (v.state) {
      bool named = v.state->Is(Value::Kind::kDict);
      for (const auto& kv : v.state->dict) {
        named = named && kv.first && kv.first->Is(Value::Kind::kStr);
      }
      if (named) {
        for (const auto& kv : v.state->dict) {
          if (Full()) break;
          sep();
          out_ += kv.first->str + "=";
          Print(kv.second.get(), depth + 1);
        }
      } else {
        sep();
        out_ += "state=";
        Print(v.state.get(), depth + 1);
      }
    }
    out_ += ")";
  }

  size_t limit_;
  std::string out_;
};

}  // namespace

// --- Value.

Value::~Value() {
  // Children this node holds the last reference to are taken apart here, one level at a
  // time, so destruction never recurses more than one frame deep.
  std::vector<ValuePtr> pending;
  auto take = [&pending](Value& v) {
    for (auto& p : v.items) {
      if (p) pending.push_back(std::move(p));
    }
    for (auto& kv : v.dict) {
      if (kv.first) pending.push_back(std::move(kv.first));
      if (kv.second) pending.push_back(std::move(kv.second));
    }
    v.items.clear();
    v.dict.clear();
    for (ValuePtr* p : {&v.cls, &v.args, &v.state}) {
      if (*p) pending.push_back(std::move(*p));
    }
  };
  take(*this);
  while (!pending.empty()) {
    ValuePtr p = std::move(pending.back());
    pending.pop_back();
    if (p.use_count() == 1) take(*p);
  }
}

ValuePtr Value::None() { return Make(Kind::kNone); }
ValuePtr Value::Bool(bool v) {
  auto r = Make(Kind::kBool);
  r->b = v;
  return r;
}
ValuePtr Value::Int(int64_t v) {
  auto r = Make(Kind::kInt);
  r->i = v;
  return r;
}
ValuePtr Value::Float(double v) {
  auto r = Make(Kind::kFloat);
  r->f = v;
  return r;
}
ValuePtr Value::Str(std::string v) {
  auto r = Make(Kind::kStr);
  r->str = std::move(v);
  return r;
}
ValuePtr Value::Bytes(std::string v) {
  auto r = Make(Kind::kBytes);
  r->str = std::move(v);
  return r;
}
ValuePtr Value::Tuple(std::vector<ValuePtr> v) {
  auto r = Make(Kind::kTuple);
  r->items = std::move(v);
  return r;
}
ValuePtr Value::List(std::vector<ValuePtr> v) {
  auto r = Make(Kind::kList);
  r->items = std::move(v);
  return r;
}
ValuePtr Value::Dict(std::vector<std::pair<ValuePtr, ValuePtr>> v) {
  auto r = Make(Kind::kDict);
  r->dict = std::move(v);
  return r;
}
ValuePtr Value::Global(std::string module, std::string name) {
  auto r = Make(Kind::kGlobal);
  r->module = std::move(module);
  r->name = std::move(name);
  return r;
}

bool Value::IsGlobal(const std::string& m, const std::string& n) const {
  return kind == Kind::kGlobal && module == m && name == n;
}

bool Value::IsObjectOf(const std::string& m, const std::string& n) const {
  return kind == Kind::kObject && cls && cls->IsGlobal(m, n);
}

int64_t Value::AsInt(const std::string& what) const {
  if (kind == Kind::kBool) return b;
  DCPP_CHECK(kind == Kind::kInt, "pickle: ", what, " is a ", KindName(kind), ", expected an int");
  return i;
}

const std::string& Value::AsStr(const std::string& what) const {
  DCPP_CHECK(kind == Kind::kStr, "pickle: ", what, " is a ", KindName(kind), ", expected a str");
  return str;
}

const std::vector<ValuePtr>& Value::AsSeq(const std::string& what) const {
  DCPP_CHECK(kind == Kind::kTuple || kind == Kind::kList, "pickle: ", what, " is a ",
             KindName(kind), ", expected a tuple or list");
  return items;
}

ValuePtr Value::Get(const std::string& key) const {
  DCPP_CHECK(kind == Kind::kDict || kind == Kind::kObject, "pickle: looking up '", key, "' in a ",
             KindName(kind), ", expected a dict");
  for (auto it = dict.rbegin(); it != dict.rend(); ++it) {
    if (it->first && it->first->kind == Kind::kStr && it->first->str == key) return it->second;
  }
  return nullptr;
}

ValuePtr Value::Attr(const std::string& key) const {
  if (kind != Kind::kObject || !state) return nullptr;
  if (state->kind == Kind::kDict) return state->Get(key);
  // Classes with __slots__: (instance dict or None, slots dict).
  if (state->kind == Kind::kTuple && state->items.size() == 2) {
    for (const auto& part : state->items) {
      if (part && part->kind == Kind::kDict) {
        if (ValuePtr v = part->Get(key)) return v;
      }
    }
  }
  return nullptr;
}

// clang-format off
const char* KindName(Value::Kind k) {
  switch (k) {
    case Value::Kind::kNone: return "None";
    case Value::Kind::kBool: return "bool";
    case Value::Kind::kInt: return "int";
    case Value::Kind::kFloat: return "float";
    case Value::Kind::kStr: return "str";
    case Value::Kind::kBytes: return "bytes";
    case Value::Kind::kTuple: return "tuple";
    case Value::Kind::kList: return "list";
    case Value::Kind::kSet: return "set";
    case Value::Kind::kDict: return "dict";
    case Value::Kind::kGlobal: return "global";
    case Value::Kind::kObject: return "object";
    case Value::Kind::kPersistent: return "persistent id";
  }
  return "?";
}
// clang-format on

namespace {

std::vector<Value*> ChildrenOf(const Value& v) {
  std::vector<Value*> out;
  for (const auto& p : v.items) out.push_back(p.get());
  for (const auto& [k, x] : v.dict) out.push_back(k.get()), out.push_back(x.get());
  for (const ValuePtr* p : {&v.cls, &v.args, &v.state}) out.push_back(p->get());
  return out;
}

// True when a container reachable from `roots` holds itself, directly or not (APPEND, SETITEM
// or BUILD with a memoized container: `l = []; l.append(l)`). Iterative, so deep nesting is
// fine.
bool HasCycle(const std::vector<ValuePtr>& roots) {
  enum Color : uint8_t { kOpen = 1, kDone = 2 };
  std::unordered_map<const Value*, uint8_t> color;
  for (const ValuePtr& r : roots) {
    const Value* root = r.get();
    if (root == nullptr || color.count(root)) continue;
    std::vector<std::pair<const Value*, std::vector<Value*>>> path;
    color[root] = kOpen;
    path.emplace_back(root, ChildrenOf(*root));
    while (!path.empty()) {
      auto& [node, pending] = path.back();
      if (pending.empty()) {
        color[node] = kDone;
        path.pop_back();
        continue;
      }
      const Value* next = pending.back();
      pending.pop_back();
      if (next == nullptr) continue;
      auto it = color.find(next);
      if (it != color.end()) {
        if (it->second == kOpen) return true;
        continue;
      }
      color[next] = kOpen;
      path.emplace_back(next, ChildrenOf(*next));
    }
  }
  return false;
}

// Drops every link between the values reachable from `roots`, so that reference cycles do not
// keep them alive once the decoder lets go.
void Unlink(const std::vector<ValuePtr>& roots) {
  std::unordered_set<const Value*> seen;
  std::vector<Value*> todo;
  for (const ValuePtr& r : roots) todo.push_back(r.get());
  std::vector<ValuePtr> keep;  // released after the walk, so no node dies while in `todo`
  while (!todo.empty()) {
    Value* v = todo.back();
    todo.pop_back();
    if (v == nullptr || !seen.insert(v).second) continue;
    for (Value* c : ChildrenOf(*v)) todo.push_back(c);
    for (auto& p : v->items) keep.push_back(std::move(p));
    for (auto& [k, x] : v->dict) keep.push_back(std::move(k)), keep.push_back(std::move(x));
    for (ValuePtr* p : {&v->cls, &v->args, &v->state}) keep.push_back(std::move(*p));
    v->items.clear();
    v->dict.clear();
  }
}

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

std::string Repr(const Value& v, size_t max_len) {
  Printer p(max_len);
  p.Print(&v, 0);
  return p.Take();
}

// --- Writer.

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
