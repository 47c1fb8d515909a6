// pickle::Decode's opcodes and limits: the memo, protocol 0's text forms, binary opcodes,
// refused globals and opcodes, malformed, truncated and corrupted input, deep nesting, cycles.
#include "core/storage/dcp/pickle.h"

#include <cstdint>
#include <random>
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

}  // namespace
}  // namespace pickle
}  // namespace dcpp
