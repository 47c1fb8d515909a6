// The state dict model: what a rank hands to save() and receives from load().
//
// A StateDict is an ordered list of entries keyed by FQN ("net1.weight"). A TensorEntry has a
// global shape and dtype and the chunks of it this process holds, each a Box with an
// at::Tensor of exactly the box's sizes (any strides, CPU or CUDA, possibly empty). For load,
// a chunk's tensor may be undefined or on the meta device: the engine allocates it. A
// BytesEntry is an opaque blob (a step counter, RNG state, a serialized object).
//
// Nested dicts and lists flatten to dotted FQNs ("optim.state.0.exp_avg") and back.
//
// The StateDict owns its entries; tensors share storage with the caller's tensors (load writes
// into them in place). Not thread-safe for concurrent mutation.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/model/box.h"
#include "core/model/layout.h"

namespace dcpp {

struct LocalChunk {
  Box box;
  at::Tensor tensor;  // sizes == box.sizes; undefined or meta = to be allocated by load()
};

struct TensorEntry {
  std::string fqn;
  c10::ScalarType dtype = c10::ScalarType::Float;
  std::vector<int64_t> shape;
  std::vector<LocalChunk> chunks;
};

struct BytesEntry {
  std::string fqn;
  std::string data;
};

class StateDict {
 public:
  // Adds a plain (unsharded) tensor: one chunk covering all of it.
  void AddTensor(const std::string& fqn, const at::Tensor& t);
  // Adds a tensor entry; throws dcpp::Error if the FQN is taken or a chunk does not match.
  void Add(TensorEntry e);
  void Add(BytesEntry e);
  void AddBytes(const std::string& fqn, std::string data) { Add(BytesEntry{fqn, std::move(data)}); }

  // The chunk(s) `rank` holds of `full` under `layout`, as views of `full`.
  void AddSharded(const std::string& fqn, const at::Tensor& full, const Layout& layout,
                  int64_t rank);
  // A target for load(): the box `rank` holds under `layout`, not yet allocated.
  void AddUnallocated(const std::string& fqn, c10::ScalarType dtype,
                      const std::vector<int64_t>& shape, const Layout& layout, int64_t rank);

  bool Has(const std::string& fqn) const { return index_.count(fqn) > 0; }
  TensorEntry* FindTensor(const std::string& fqn);
  const TensorEntry* FindTensor(const std::string& fqn) const;
  BytesEntry* FindBytes(const std::string& fqn);
  const BytesEntry* FindBytes(const std::string& fqn) const;

  std::vector<TensorEntry>& tensors() { return tensors_; }
  const std::vector<TensorEntry>& tensors() const { return tensors_; }
  std::vector<BytesEntry>& bytes() { return bytes_; }
  const std::vector<BytesEntry>& bytes() const { return bytes_; }
  size_t size() const { return tensors_.size() + bytes_.size(); }

 private:
  std::vector<TensorEntry> tensors_;
  std::vector<BytesEntry> bytes_;
  std::map<std::string, std::pair<bool, size_t>> index_;  // fqn -> (is_bytes, position)
};

// A nested state dict: dicts (ordered), lists, tensors and blobs, as a trainer builds it
// ({"model": {...}, "optim": {"state": {...}, "param_groups": [...]}}).
struct Nested {
  enum class Kind { kDict, kList, kTensor, kBytes };
  Kind kind = Kind::kDict;
  std::vector<std::pair<std::string, Nested>> dict;
  std::vector<Nested> list;
  at::Tensor tensor;
  std::string bytes;

  static Nested Dict() { return Nested(); }
  static Nested List() { Nested n; n.kind = Kind::kList; return n; }
  static Nested Tensor(at::Tensor t) { Nested n; n.kind = Kind::kTensor; n.tensor = std::move(t); return n; }
  static Nested Bytes(std::string b) { Nested n; n.kind = Kind::kBytes; n.bytes = std::move(b); return n; }
  Nested& Set(const std::string& key, Nested v);  // for dicts; returns *this
  Nested& Append(Nested v);                        // for lists; returns *this
  const Nested* Get(const std::string& key) const;
};

// Flattens `root` (a dict) into FQNs joined by '.', list positions as numbers.
StateDict Flatten(const Nested& root);

// Rebuilds the nesting from FQNs: a level whose keys are exactly 0..n-1 becomes a list.
// Tensors are the entries' single chunks (a sharded entry contributes its first chunk).
Nested Unflatten(const StateDict& sd);

}  // namespace dcpp
