#include "core/model/state_dict.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "core/base/error.h"

namespace dcpp {

void StateDict::AddTensor(const std::string& fqn, const at::Tensor& t) {
  TensorEntry e;
  e.fqn = fqn;
  e.dtype = t.scalar_type();
  e.shape = t.sizes().vec();
  e.chunks.push_back({WholeBox(e.shape), t});
  Add(std::move(e));
}

void StateDict::Add(TensorEntry e) {
  // (Any string is a key, "" included: PyTorch saves {"": t}.)
  DCPP_CHECK(!Has(e.fqn), "state dict: duplicate key '", e.fqn, "'");
  for (const LocalChunk& c : e.chunks) {
    DCPP_CHECK(c.box.sizes.size() == e.shape.size() && Contains(WholeBox(e.shape), c.box),
               "key '", e.fqn, "': chunk ", c.box.ToString(), " is outside the tensor's shape");
    if (c.tensor.defined() && !c.tensor.is_meta()) {
      DCPP_CHECK(c.tensor.sizes().vec() == c.box.sizes, "key '", e.fqn, "': chunk ",
                 c.box.ToString(), " holds a tensor of sizes ", c.tensor.sizes());
      DCPP_CHECK(c.tensor.scalar_type() == e.dtype, "key '", e.fqn, "': chunk tensor is ",
                 c10::toString(c.tensor.scalar_type()), ", entry is ", c10::toString(e.dtype));
    }
  }
  index_[e.fqn] = {false, tensors_.size()};
  tensors_.push_back(std::move(e));
}

void StateDict::Add(BytesEntry e) {
  DCPP_CHECK(!Has(e.fqn), "state dict: duplicate key '", e.fqn, "'");
  index_[e.fqn] = {true, bytes_.size()};
  bytes_.push_back(std::move(e));
}

void StateDict::AddSharded(const std::string& fqn, const at::Tensor& full, const Layout& layout,
                           int64_t rank) {
  TensorEntry* e = FindTensor(fqn);
  if (e == nullptr) {
    TensorEntry n;
    n.fqn = fqn;
    n.dtype = full.scalar_type();
    n.shape = full.sizes().vec();
    Add(std::move(n));
    e = FindTensor(fqn);
  }
  const Box box = BoxForRank(e->shape, layout, rank);
  at::Tensor view = full;
  for (size_t d = 0; d < box.sizes.size(); ++d) {
    view = view.narrow(static_cast<int64_t>(d), box.offsets[d], box.sizes[d]);
  }
  e->chunks.push_back({box, view});
}

void StateDict::AddUnallocated(const std::string& fqn, c10::ScalarType dtype,
                               const std::vector<int64_t>& shape, const Layout& layout,
                               int64_t rank) {
  TensorEntry* e = FindTensor(fqn);
  if (e == nullptr) {
    Add(TensorEntry{fqn, dtype, shape, {}});
    e = FindTensor(fqn);
  }
  e->chunks.push_back({BoxForRank(shape, layout, rank), at::Tensor()});
}

TensorEntry* StateDict::FindTensor(const std::string& fqn) {
  auto it = index_.find(fqn);
  return it == index_.end() || it->second.first ? nullptr : &tensors_[it->second.second];
}
const TensorEntry* StateDict::FindTensor(const std::string& fqn) const {
  return const_cast<StateDict*>(this)->FindTensor(fqn);
}
BytesEntry* StateDict::FindBytes(const std::string& fqn) {
  auto it = index_.find(fqn);
  return it == index_.end() || !it->second.first ? nullptr : &bytes_[it->second.second];
}
const BytesEntry* StateDict::FindBytes(const std::string& fqn) const {
  return const_cast<StateDict*>(this)->FindBytes(fqn);
}

Nested& Nested::Set(const std::string& key, Nested v) {
  DCPP_CHECK(kind == Kind::kDict, "Nested::Set on a non-dict");
  for (auto& kv : dict) {
    if (kv.first == key) {
      kv.second = std::move(v);
      return *this;
    }
  }
  dict.emplace_back(key, std::move(v));
  return *this;
}

Nested& Nested::Append(Nested v) {
  DCPP_CHECK(kind == Kind::kList, "Nested::Append on a non-list");
  list.push_back(std::move(v));
  return *this;
}

const Nested* Nested::Get(const std::string& key) const {
  for (const auto& kv : dict) {
    if (kv.first == key) return &kv.second;
  }
  return nullptr;
}

namespace {

// `root`: `n` is the top dict, whose keys are FQNs of their own ("" too: {"": {"a": t}} is
// ".a", as PyTorch joins the path).
void FlattenInto(const Nested& n, const std::string& prefix, bool root, StateDict& out) {
  auto join = [&](const std::string& k) { return root ? k : prefix + "." + k; };
  switch (n.kind) {
    case Nested::Kind::kDict:
      for (const auto& [k, v] : n.dict) {
        DCPP_CHECK(k.find('.') == std::string::npos, "nested key '", join(k),
                   "' contains '.', which separates FQN parts");
        FlattenInto(v, join(k), false, out);
      }
      break;
    case Nested::Kind::kList:
      for (size_t i = 0; i < n.list.size(); ++i) FlattenInto(n.list[i], join(std::to_string(i)), false, out);
      break;
    case Nested::Kind::kTensor:
      out.AddTensor(prefix, n.tensor);
      break;
    case Nested::Kind::kBytes:
      out.AddBytes(prefix, n.bytes);
      break;
  }
}

Nested& Descend(Nested& root, const std::string& fqn) {
  Nested* cur = &root;
  size_t start = 0;
  while (true) {
    const size_t dot = fqn.find('.', start);
    const std::string part = fqn.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    Nested* next = nullptr;
    for (auto& kv : cur->dict) {
      if (kv.first == part) next = &kv.second;
    }
    if (next == nullptr) {
      cur->dict.emplace_back(part, Nested());
      next = &cur->dict.back().second;
    }
    if (dot == std::string::npos) return *next;
    cur = next;
    start = dot + 1;
  }
}

// Turns dicts whose keys are exactly "0".."n-1" into lists, recursively.
void Listify(Nested& n) {
  if (n.kind != Nested::Kind::kDict) return;
  for (auto& kv : n.dict) Listify(kv.second);
  if (n.dict.empty()) return;
  std::vector<Nested*> slots(n.dict.size(), nullptr);
  for (auto& kv : n.dict) {
    const std::string& k = kv.first;
    // (At most 18 digits: a longer number is no index of this dict, and std::stoul would throw.)
    if (k.empty() || k.size() > 18 || !std::all_of(k.begin(), k.end(), ::isdigit) ||
        (k.size() > 1 && k[0] == '0')) {
      return;
    }
    const size_t i = std::stoul(k);
    if (i >= slots.size() || slots[i] != nullptr) return;
    slots[i] = &kv.second;
  }
  Nested list = Nested::List();
  for (Nested* s : slots) list.list.push_back(std::move(*s));
  n = std::move(list);
}

}  // namespace

StateDict Flatten(const Nested& root) {
  DCPP_CHECK(root.kind == Nested::Kind::kDict, "Flatten: the root must be a dict");
  StateDict sd;
  FlattenInto(root, "", true, sd);
  return sd;
}

Nested Unflatten(const StateDict& sd) {
  Nested root;
  for (const TensorEntry& e : sd.tensors()) {
    Descend(root, e.fqn) = Nested::Tensor(e.chunks.empty() ? at::Tensor() : e.chunks[0].tensor);
  }
  for (const BytesEntry& e : sd.bytes()) Descend(root, e.fqn) = Nested::Bytes(e.data);
  for (auto& kv : root.dict) Listify(kv.second);  // the root stays a dict
  return root;
}

}  // namespace dcpp
