// Metadata helpers shared by inspect.cc and verify.cc: internal to core/tools (the target is
// private to this package). Pure functions over a parsed proto::Metadata; thread-safe.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "core/format/metadata.pb.h"

namespace dcpp {

// "[1, 2, 3]".
template <typename Ints>
std::string ListString(const Ints& v) {
  std::ostringstream os;
  os << "[";
  bool first = true;
  for (int64_t x : v) {
    os << (first ? "" : ", ") << x;
    first = false;
  }
  os << "]";
  return os.str();
}

// The number of elements of the tensor's whole shape.
int64_t NumelOf(const proto::TensorMeta& t);

// The entries in key order (stable: a key listed twice keeps its order).
template <typename T>
std::vector<const T*> SortedByKey(const google::protobuf::RepeatedPtrField<T>& entries) {
  std::vector<const T*> out;
  for (const T& e : entries) out.push_back(&e);
  std::stable_sort(out.begin(), out.end(), [](const T* a, const T* b) { return a->fqn() < b->fqn(); });
  return out;
}

struct FileUse {
  int64_t bytes = 0;
  int64_t entries = 0;
};

// The data files the metadata names, with the bytes and entries (chunks and blobs) in each.
std::map<std::string, FileUse> FilesOf(const proto::Metadata& md);

}  // namespace dcpp
