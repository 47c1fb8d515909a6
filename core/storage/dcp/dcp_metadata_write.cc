// WriteDcpMetadata: DCP's .metadata pickle for dcpp metadata whose chunks DcpWriter framed,
// as torch.distributed.checkpoint writes it (protocol 4).
#include "core/storage/dcp/dcp.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/storage/dcp/dcp_internal.h"
#include "core/storage/dcp/pickle.h"
#include "core/storage/dcp/torch_archive.h"
#include "core/storage/dcp/zstd_stream.h"

namespace dcpp {
namespace {

void PutSize(pickle::Writer& w, const std::vector<int64_t>& v) {
  w.Global("torch", "Size").Mark();
  for (int64_t x : v) w.Int(x);
  w.Tuple().Tuple(1).Reduce();
}

// NEWOBJ of a DCP class, then its state dict of `n` pairs that the caller writes between
// BeginObject and EndObject.
void BeginObject(pickle::Writer& w, const char* module, const char* cls) {
  w.Global(module, cls).Tuple(0).NewObj().EmptyDict().Mark();
}
void EndObject(pickle::Writer& w) { w.SetItems().Build(); }

std::string NewSaveId() {
  std::random_device rd;
  std::mt19937_64 gen((static_cast<uint64_t>(rd()) << 32) ^ rd() ^
                      static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()));
  const uint64_t a = gen(), b = gen();
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-%04x-4%03x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xfff),
                static_cast<unsigned>(0x8000 | ((b >> 48) & 0x3fff)),
                static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buf;
}

}  // namespace

std::string WriteDcpMetadata(const proto::Metadata& md, const std::string& checkpoint_id,
                             const DcpItemPlaces* compressed) {
  pickle::Writer w(4);
  BeginObject(w, kMd, "Metadata");

  w.Str("state_dict_metadata").EmptyDict().Mark();
  for (const proto::TensorMeta& t : md.tensors()) {
    w.Str(t.fqn());
    BeginObject(w, kMd, "TensorStorageMetadata");
    w.Str("properties");
    w.Global(kMd, "TensorProperties").Tuple(0).NewObj();
    w.Mark();
    w.Global("torch", t.dtype());
    w.Global("torch.serialization", "_get_layout").Str("torch.strided").Tuple(1).Reduce();
    w.Bool(false);
    w.Global(kMd, "_MEM_FORMAT_ENCODING").Int(0).Tuple(1).Reduce();
    w.Bool(false);
    w.Tuple().Build();
    w.Str("size");
    PutSize(w, {t.shape().begin(), t.shape().end()});
    w.Str("chunks").EmptyList().Mark();
    for (const proto::ChunkMeta& c : t.chunks()) {
      BeginObject(w, kMd, "ChunkStorageMetadata");
      w.Str("offsets");
      PutSize(w, {c.offsets().begin(), c.offsets().end()});
      w.Str("sizes");
      PutSize(w, {c.sizes().begin(), c.sizes().end()});
      EndObject(w);
    }
    w.Appends();
    EndObject(w);
  }
  for (const proto::BytesMeta& b : md.bytes()) {
    w.Str(b.fqn());
    w.Global(kMd, "BytesStorageMetadata").Tuple(0).NewObj();
  }
  w.SetItems();

  // How each flattened key nests (as DefaultSavePlanner records it): the path the source
  // checkpoint recorded when it still names this key, else the key as one component (what
  // PyTorch writes for a flat state dict's keys).
  nlohmann::json known = nlohmann::json::object();
  auto it = md.planner_data().find(kDcpPaths);
  if (it != md.planner_data().end()) {
    known = nlohmann::json::parse(it->second, nullptr, /*allow_exceptions=*/false);
    if (!known.is_object()) known = nlohmann::json::object();
  }
  w.Str("planner_data").EmptyDict().Mark();
  auto path = [&](const std::string& fqn) {
    w.Str(fqn).Mark();
    auto p = known.find(fqn);
    std::string joined;
    if (p != known.end() && p->is_array()) {
      bool first = true;  // (components may be "": ["", "a"] is ".a")
      for (const auto& c : *p) {
        joined += (first ? "" : ".") + (c.is_string() ? c.get<std::string>() : c.dump());
        first = false;
      }
    }
    if (p != known.end() && joined == fqn) {
      for (const auto& c : *p) {
        if (c.is_string()) {
          w.Str(c.get<std::string>());
        } else {
          w.Int(c.get<int64_t>());
        }
      }
    } else {
      w.Str(fqn);
    }
    w.Tuple();
  };
  for (const proto::TensorMeta& t : md.tensors()) path(t.fqn());
  for (const proto::BytesMeta& b : md.bytes()) path(b.fqn());
  w.SetItems();

  w.Str("storage_data").EmptyDict().Mark();
  auto info = [&](const std::string& file, uint64_t offset, uint64_t length) {
    if (compressed) {
      auto it = compressed->find({file, offset});
      DCPP_CHECK(it != compressed->end(), checkpoint_id, "/", file, ": the item at byte ", offset,
                 " was not compressed");
      std::tie(offset, length) = it->second;
    }
    BeginObject(w, kFs, "_StorageInfo");
    w.Str("relative_path").Str(file);
    w.Str("offset").Int(static_cast<int64_t>(offset));
    w.Str("length").Int(static_cast<int64_t>(length));
    if (compressed) w.Str("transform_descriptors").EmptyList().Str(kZstdDescriptor).Append();
    EndObject(w);
  };
  for (const proto::TensorMeta& t : md.tensors()) {
    int index = 0;
    for (const proto::ChunkMeta& c : t.chunks()) {
      BeginObject(w, kMd, "MetadataIndex");
      w.Str("fqn").Str(t.fqn());
      w.Str("offset");
      PutSize(w, {c.offsets().begin(), c.offsets().end()});
      w.Str("index").Int(index++);
      EndObject(w);
      const torch_archive::TensorArchive a(t.dtype(), {c.sizes().begin(), c.sizes().end()}, c.length());
      info(c.file(), c.offset() - a.prefix().size(), a.prefix().size() + c.length() + a.suffix_size());
    }
  }
  for (const proto::BytesMeta& b : md.bytes()) {
    BeginObject(w, kMd, "MetadataIndex");
    w.Str("fqn").Str(b.fqn());
    w.Str("index").None();
    EndObject(w);
    info(b.file(), b.offset(), b.length());
  }
  w.SetItems();

  w.Str("storage_meta");
  BeginObject(w, kMd, "StorageMeta");
  w.Str("checkpoint_id").Str(checkpoint_id);
  w.Str("save_id").Str(NewSaveId());
  w.Str("load_id").None();
  w.Str("modules").EmptyList();
  EndObject(w);

  w.Str("version").Str(kDcpVersion);
  EndObject(w);
  return w.Finish();
}

}  // namespace dcpp
