#include "core/storage/registry.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace dcpp {
namespace {

// Built on first use, so registrations from any translation unit find it constructed.
std::vector<FormatBackend>& Registry() {
  static auto* formats = new std::vector<FormatBackend>;
  return *formats;
}

}  // namespace

FormatRegistration::FormatRegistration(FormatBackend backend) {
  if (FindFormat(backend.name) != nullptr) {
    std::fprintf(stderr, "dcpp: the checkpoint format '%s' is registered twice\n", backend.name);
    std::abort();
  }
  Registry().push_back(std::move(backend));
}

std::vector<const FormatBackend*> RegisteredFormats() {
  std::vector<const FormatBackend*> out;
  for (const FormatBackend& b : Registry()) out.push_back(&b);
  std::sort(out.begin(), out.end(), [](const FormatBackend* a, const FormatBackend* b) {
    return a->rank != b->rank ? a->rank < b->rank : std::strcmp(a->name, b->name) < 0;
  });
  return out;
}

const FormatBackend* FindFormat(const std::string& name) {
  for (const FormatBackend& b : Registry()) {
    if (name == b.name) return &b;
  }
  return nullptr;
}

}  // namespace dcpp
