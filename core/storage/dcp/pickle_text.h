// Pickle's text forms, shared by pickle's decoder and writer (not part of pickle.h's API):
// UTF-8 as Python writes str, protocol 0's decimal integers, and the escapes of the STRING
// and UNICODE opcodes' arguments. Thread-safe (pure functions).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace dcpp {
namespace pickle {

// Appends code point `cp` as UTF-8 (lone surrogates too, as Python's 'surrogatepass').
void AppendUtf8(std::string* out, uint32_t cp);

// Well-formed UTF-8, lone surrogates included: Python writes str with 'surrogatepass'.
bool IsUtf8(const char* s, size_t n);

// Decimal integer with an optional sign, as protocol 0 writes them. False if `s` is not one
// or does not fit in int64.
bool ParseInt64(const std::string& s, int64_t* out);

// Reports malformed text; it must throw (the decoder's Fail, which names the opcode and its
// byte position).
using TextFail = std::function<void(const std::string& what)>;

// STRING: a Python 2 str literal, quoted, with C-like escapes (codecs.escape_decode).
std::string UnquoteString(const std::string& q, const TextFail& fail);

// UNICODE: 'raw-unicode-escape', i.e. latin-1 bytes where \uXXXX and \UXXXXXXXX (after an
// odd number of backslashes) stand for code points. Returns UTF-8.
std::string RawUnicodeEscape(const std::string& s, const TextFail& fail);

}  // namespace pickle
}  // namespace dcpp
