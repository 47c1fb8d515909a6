#include "core/format/file_names.h"

namespace dcpp {
namespace {

// Parses decimal digits at `pos` (1 to 10 of them, value below 2^31) and moves `pos` past them.
bool Number(const std::string& s, size_t* pos, long* out) {
  long v = 0;
  size_t i = *pos;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9' && i - *pos < 11) {
    v = v * 10 + (s[i] - '0');
    ++i;
  }
  if (i == *pos || i - *pos > 10 || v >= (1L << 31)) return false;
  *pos = i;
  *out = v;
  return true;
}

}  // namespace

bool ParseDataFileName(const std::string& name, long* rank, long* n) {
  static const std::string kPrefix = "__", kSuffix = ".distcp";
  if (name.compare(0, kPrefix.size(), kPrefix) != 0) return false;
  size_t pos = kPrefix.size();
  long r = 0, k = 0;
  if (!Number(name, &pos, &r) || pos >= name.size() || name[pos] != '_') return false;
  ++pos;
  if (!Number(name, &pos, &k) || name.compare(pos, std::string::npos, kSuffix) != 0) return false;
  *rank = r;
  *n = k;
  return true;
}

bool IsDataFileName(const std::string& name) {
  long r = 0, n = 0;
  return ParseDataFileName(name, &r, &n);
}

bool IsDataFileTempName(const std::string& name) {
  static const std::string kDistcp = ".distcp.", kTmp = ".tmp";
  if (name.size() < kTmp.size() || name.compare(name.size() - kTmp.size(), kTmp.size(), kTmp) != 0) return false;
  const size_t at = name.find(kDistcp);
  return at != std::string::npos && IsDataFileName(name.substr(0, at + kDistcp.size() - 1));
}

bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos && name.find('\\') == std::string::npos;
}

bool IsReservedFileName(const std::string& name) {
  return name == kMetadataName || name == kMetadataTmpName || name == kLockName;
}

}  // namespace dcpp
