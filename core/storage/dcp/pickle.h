// A safe subset of Python's pickle, for reading and writing PyTorch's own files (DCP's
// .metadata, the data.pkl of a torch.save archive) without Python.
//
// Decoding executes nothing: every opcode builds a plain Value tree. A global (GLOBAL or
// STACK_GLOBAL) must be on the caller's allow-list or decoding stops with an error naming it
// ("pickle: global 'os.system' is not allowed in <where>"). REDUCE and NEWOBJ on an allowed
// global record the call as a kObject (class + arguments); BUILD records the state on it.
// Interpreting those objects (torch.Size, a DCP dataclass...) is the caller's job.
//
// Opcodes understood: protocols 0-5 as Python and PyTorch write them (PROTO, FRAME, STOP,
// MARK, POP, POP_MARK, DUP, the memo ones, NONE, NEWTRUE/NEWFALSE, INT, BININT*, LONG, LONG1,
// LONG4, FLOAT, BINFLOAT, the string/unicode/bytes ones, BYTEARRAY8, EMPTY_*, TUPLE*, LIST,
// DICT, APPEND(S), SETITEM(S), EMPTY_SET, ADDITEMS, FROZENSET, GLOBAL, STACK_GLOBAL, REDUCE,
// BUILD, NEWOBJ, NEWOBJ_EX, PERSID, BINPERSID). Anything else (INST, OBJ, EXT*,
// NEXT_BUFFER, ...) is refused naming the opcode and its byte position.
//
// Integers must fit in int64; a longer one is refused. NEWOBJ_EX is accepted only with empty
// keyword arguments (CPython writes it only for non-empty ones: those are refused, not
// dropped, since a kObject has nowhere to keep them). In protocols 0-2 the module names
// Python 2 used are read as Python 3 does ('__builtin__' is 'builtins', 'copy_reg' is
// 'copyreg') before the allow-list sees them. STOP must leave exactly one value and no open
// MARK. A container that holds itself (a reference cycle: `l = []; l.append(l)`), anywhere
// among the values the pickle builds, even one it drops again, is refused: nothing dcpp reads
// has one, and a shared_ptr cycle would leak. Thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace dcpp {
namespace pickle {

struct Value;
using ValuePtr = std::shared_ptr<Value>;

struct Value {
  enum class Kind {
    kNone,
    kBool,
    kInt,
    kFloat,
    kStr,         // text (UTF-8) in `str`
    kBytes,       // bytes or bytearray in `str`
    kTuple,       // `items`
    kList,        // `items`
    kSet,         // set or frozenset, in `items`
    kDict,        // `dict`, in insertion order
    kGlobal,      // a class or function named by `module` and `name`
    kObject,      // `cls` called (REDUCE) or instantiated (NEWOBJ) with `args`; `state` from BUILD;
                  // what APPEND(S)/ADDITEMS added in `items`, SETITEM(S) in `dict` (an OrderedDict)
    kPersistent,  // a persistent id (PERSID/BINPERSID); the id in `args`
  };
  Kind kind = Kind::kNone;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string str;
  std::string module, name;  // kGlobal
  std::vector<ValuePtr> items;
  std::vector<std::pair<ValuePtr, ValuePtr>> dict;
  ValuePtr cls;    // kObject: the kGlobal
  ValuePtr args;   // kObject: a kTuple (NEWOBJ_EX: the positional ones); kPersistent: the id
  ValuePtr state;  // kObject: what BUILD set (a dict, or a tuple), null if none

  Value() = default;
  Value(const Value&) = default;
  Value(Value&&) = default;
  Value& operator=(const Value&) = default;
  Value& operator=(Value&&) = default;
  // Frees children iteratively, so that a deeply nested tree (a hostile pickle can nest a
  // million lists in 2 MB) does not overflow the stack when it is dropped.
  ~Value();

  // Constructors for building values by hand (tests, writers).
  static ValuePtr None();
  static ValuePtr Bool(bool v);
  static ValuePtr Int(int64_t v);
  static ValuePtr Float(double v);
  static ValuePtr Str(std::string v);
  static ValuePtr Bytes(std::string v);
  static ValuePtr Tuple(std::vector<ValuePtr> v);
  static ValuePtr List(std::vector<ValuePtr> v);
  static ValuePtr Dict(std::vector<std::pair<ValuePtr, ValuePtr>> v);
  static ValuePtr Global(std::string module, std::string name);

  bool Is(Kind k) const { return kind == k; }
  // True for a kGlobal, or a kObject whose class is, `module`.`name`.
  bool IsGlobal(const std::string& module, const std::string& name) const;
  bool IsObjectOf(const std::string& module, const std::string& name) const;

  // Checked accessors: throw dcpp::Error naming `what` and the actual kind on a mismatch.
  int64_t AsInt(const std::string& what) const;                       // kInt or kBool
  const std::string& AsStr(const std::string& what) const;            // kStr
  const std::vector<ValuePtr>& AsSeq(const std::string& what) const;  // kTuple or kList
  // kDict (or an object filled by SETITEMS, e.g. an OrderedDict) with string keys: the value
  // of `key`, or null if absent; the last one when a pickle repeats a key, as Python keeps.
  // Throws on any other kind.
  ValuePtr Get(const std::string& key) const;
  // An object's attribute: its BUILD state when that is a dict with string keys (what
  // dataclasses pickle), or a (dict or None, slots dict) pair (what classes with __slots__
  // pickle); else null. Absent attribute, or not a kObject: null.
  ValuePtr Attr(const std::string& key) const;
};

const char* KindName(Value::Kind k);

// Which globals decoding accepts. An empty function accepts none.
using AllowGlobal = std::function<bool(const std::string& module, const std::string& name)>;

// Decodes one pickle from `data`. `where` names the file for messages, e.g.
// "/ckpt/.metadata". Throws dcpp::Error on a refused global or opcode, on truncated or
// malformed input (naming the byte position), on trailing garbage after STOP, and on a
// container that holds itself (a reference cycle, which nothing dcpp reads has).
ValuePtr Decode(const std::string& data, const AllowGlobal& allow, const std::string& where);

// Python-like text of a value, for inspect and messages: None, True, 7, 1.5, 'text',
// b'..' (long bytes shortened), (1, 2), [1, 'a'], {'k': 1}, module.name, and
// module.name(args..., key=value...) for objects (state=... when the state is not a dict
// with str keys), persistent_id(...). At most `max_len` characters (then "...").
std::string Repr(const Value& v, size_t max_len = 200);

// Emits pickle opcodes, low level: the caller pushes values in the order Python's pickler
// would and gets the bytes from Finish(). No memo is used (every value is written in full,
// once per reference). Protocol 2 output unless a higher one (3-5) is asked; PROTO n comes
// first, FRAME is never written. Put() writes what CPython's pickler does (its choice of
// opcodes and batches of 1000) less the memo, byte for byte under protocols 2 and 3
// (pickletools.optimize(pickle.dumps(x, p)), b'' aside, see Bytes()); from protocol 4 it
// differs only in GLOBAL for STACK_GLOBAL and in having no FRAME.
// PyTorch's torch.load(weights_only=True) reads only protocol 2's opcodes (no
// SHORT_BINUNICODE, SHORT_BINBYTES, FRAME...): write a torch.save data.pkl with Writer(2).
class Writer {
 public:
  explicit Writer(int protocol = 2);

  Writer& None();
  Writer& Bool(bool v);
  Writer& Int(int64_t v);                // BININT1/BININT2/BININT or LONG1 as needed
  Writer& Float(double v);               // BINFLOAT
  Writer& Str(const std::string& utf8);  // BINUNICODE (SHORT_BINUNICODE from protocol 4)
  // Python bytes: BINBYTES/SHORT_BINBYTES/BINBYTES8 from protocol 3; on protocol 2 as Python
  // 3 writes it there, _codecs.encode(latin-1 text, 'latin1'), also for b'' (where CPython
  // writes __builtin__.bytes(), a global torch.load(weights_only=True) does not allow).
  Writer& Bytes(const std::string& data);
  Writer& Global(const std::string& module, const std::string& name);  // GLOBAL
  Writer& Mark();
  Writer& Tuple();       // TUPLE: the values since the last Mark
  Writer& Tuple(int n);  // EMPTY_TUPLE, TUPLE1, TUPLE2, TUPLE3 for n = 0..3
  Writer& EmptyList();
  Writer& Appends();  // APPENDS: the values since the last Mark onto the list below it
  Writer& Append();   // APPEND: the top value onto the list below it
  Writer& EmptyDict();
  Writer& SetItems();   // SETITEMS: key, value pairs since the last Mark
  Writer& SetItem();    // SETITEM: the top key, value pair into the dict below them
  Writer& Reduce();     // REDUCE: callable, args tuple
  Writer& NewObj();     // NEWOBJ: class, args tuple
  Writer& Build();      // BUILD: object, state
  Writer& BinPersId();  // BINPERSID: the id on the stack

  // Writes a plain value tree (None, bool, int, float, str, bytes, tuple, list, dict, set
  // as builtins.set (EMPTY_SET + ADDITEMS from protocol 4), global, object as REDUCE + BUILD
  // plus its APPENDS/SETITEMS, persistent as BINPERSID). Throws on a tree nested deeper
  // than 1000 (or a cycle) and on an object whose args are not a tuple.
  Writer& Put(const Value& v);

  // Appends STOP and returns the pickle; the writer is empty afterwards.
  std::string Finish();

 private:
  void Op(uint8_t op);
  void Put(const Value& v, int depth);
  template <typename T>
  void Raw(T v);
  int protocol_;
  std::string out_;
};

}  // namespace pickle
}  // namespace dcpp
