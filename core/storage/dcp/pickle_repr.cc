// pickle::Repr: Python-like text of a value, for inspect and messages.
#include "core/storage/dcp/pickle.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "core/base/error.h"

namespace dcpp {
namespace pickle {
namespace {

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

std::string Repr(const Value& v, size_t max_len) {
  Printer p(max_len);
  p.Print(&v, 0);
  return p.Take();
}

}  // namespace pickle
}  // namespace dcpp
