// pickle::Value: its constructors, checked accessors and iterative destruction, KindName,
// and the walks over a whole value graph that Decode uses (cycle check, unlinking).
#include "core/storage/dcp/pickle.h"

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/base/error.h"
#include "core/storage/dcp/pickle_internal.h"

namespace dcpp {
namespace pickle {

ValuePtr Make(Value::Kind k) {
  auto v = std::make_shared<Value>();
  v->kind = k;
  return v;
}

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

}  // namespace

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

}  // namespace pickle
}  // namespace dcpp
