// Pickle's text forms: UTF-8 checks and encoding, protocol 0's decimal integers, and the
// escapes of STRING and UNICODE arguments (see pickle_text.h).
#include "core/storage/dcp/pickle_text.h"

#include <cstdint>
#include <cstring>
#include <string>

namespace dcpp {
namespace pickle {
namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

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

// STRING: a Python 2 str literal, quoted, with C-like escapes (codecs.escape_decode).
std::string UnquoteString(const std::string& q, const TextFail& fail) {
  if (q.size() < 2 || q.front() != q.back() || (q.front() != '\'' && q.front() != '"')) {
    fail("the STRING argument must be quoted");
  }
  std::string out;
  for (size_t i = 1; i + 1 < q.size(); ++i) {
    if (q[i] != '\\') {
      out.push_back(q[i]);
      continue;
    }
    if (++i + 1 >= q.size()) fail("trailing \\ in a STRING");
    static const char kFrom[] = "abfnrtv\\'\"", kTo[] = "\a\b\f\n\r\t\v\\'\"";
    const char c = q[i];
    if (const char* e = std::strchr(kFrom, c); e && c) {
      out.push_back(kTo[e - kFrom]);
    } else if (c == 'x') {
      const int hi = i + 1 + 1 < q.size() ? HexDigit(q[i + 1]) : -1;  // inside the quotes
      const int lo = hi >= 0 && i + 2 + 1 < q.size() ? HexDigit(q[i + 2]) : -1;
      if (lo < 0) fail("invalid \\x escape in a STRING");
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

// UNICODE: 'raw-unicode-escape', i.e. latin-1 bytes where \uXXXX and \UXXXXXXXX (after an
// odd number of backslashes) stand for code points. Returns UTF-8.
std::string RawUnicodeEscape(const std::string& s, const TextFail& fail) {
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
    if (s.size() - i < digits) fail("truncated \\u escape in a UNICODE");
    uint32_t cp = 0;
    for (size_t k = 0; k < digits; ++k) {
      const int d = HexDigit(s[i + k]);
      if (d < 0) fail("invalid \\u escape in a UNICODE");
      cp = cp * 16 + d;
    }
    if (cp > 0x10ffff) fail("\\U escape beyond U+10FFFF in a UNICODE");
    AppendUtf8(&out, cp);
    i += digits;
  }
  return out;
}

}  // namespace pickle
}  // namespace dcpp
