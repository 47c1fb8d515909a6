// DCP's .metadata as dcpp reads it: globals outside the allow-list refused, truncated
// metadata and unknown versions refused, a broken item named by key and file, and every
// variant PyTorch has written since 2.3 accepted.
#include "core/storage/dcp/dcp.h"

#include <algorithm>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/dcpp.h"
#include "core/format/metadata.h"
#include "core/storage/dcp/dcp_test_util.h"
#include "core/storage/dcp/pickle.h"
#include "core/testing/errors.h"
#include "core/testing/temp_dir.h"

namespace dcpp {
namespace {

using testing::ErrorOf;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

// A .metadata pickle whose root calls os.system: decoding refuses the global and runs nothing.
TEST(Dcp, RefusesGlobalsOutsideTheAllowList) {
  TempDir dir;
  save(Sample(), DcpWriter(dir.path()));
  const std::string marker = dir.path() + "/pwned";
  pickle::Writer w(2);
  w.Global("os", "system").Str("touch " + marker).Tuple(1).Reduce();
  WriteFile(dir.path() + "/.metadata", w.Finish());
  StateDict t = Targets(Sample());
  const std::string err = ErrorOf([&] { load(t, DcpReader(dir.path())); });
  EXPECT_HAS(err, "os.system");
  EXPECT_HAS(err, ".metadata");
  EXPECT_FALSE(std::filesystem::exists(marker));
}

TEST(Dcp, RefusesTruncatedMetadataAndUnknownVersion) {
  TempDir dir;
  save(Sample(), DcpWriter(dir.path()));
  const std::string md = ReadFile(dir.path() + "/.metadata");
  StateDict t = Targets(Sample());

  WriteFile(dir.path() + "/.metadata", md.substr(0, md.size() / 2));
  EXPECT_HAS(ErrorOf([&] { load(t, DcpReader(dir.path())); }), "truncated");

  std::string v2 = md;
  const size_t at = v2.rfind(kDcpVersion);
  ASSERT_NE(at, std::string::npos);
  v2.replace(at, 5, "7.0.0");
  WriteFile(dir.path() + "/.metadata", v2);
  const std::string err = ErrorOf([&] { load(t, DcpReader(dir.path())); });
  EXPECT_HAS(err, "version '7.0.0'");
}

TEST(Dcp, NamesTheKeyAndFileOfABrokenItem) {
  TempDir dir;
  StateDict sd;
  sd.AddTensor("w", Values({64, 64}, at::kFloat, 0));
  save(sd, DcpWriter(dir.path()));
  const proto::Metadata md = ParseMetadata(DcpReader(dir.path()).ReadMetadata(), dir.path());
  const std::string file = md.tensors(0).chunks(0).file();
  const std::string data = ReadFile(dir.path() + "/" + file);
  StateDict t;
  t.AddUnallocated("w", at::kFloat, {64, 64}, Layout::Replicated(1), 0);

  // Truncated: the item's zip directory is gone.
  WriteFile(dir.path() + "/" + file, data.substr(0, data.size() - 100));
  std::string err = ErrorOf([&] { load(t, DcpReader(dir.path())); });
  EXPECT_HAS(err, file);
  EXPECT_HAS(err, "'w'");
  EXPECT_HAS(err, "truncated");

  // Not an archive at all.
  std::string garbage(data.size(), 'x');
  WriteFile(dir.path() + "/" + file, garbage);
  err = ErrorOf([&] { load(t, DcpReader(dir.path())); });
  EXPECT_HAS(err, file);
  EXPECT_HAS(err, "not a zip archive");
}

// Rewrites every object of class `cls` in the tree (a pickle may share values: each once).
void ForEachObject(const pickle::ValuePtr& v, const std::function<void(pickle::Value&)>& fn,
                   std::set<const pickle::Value*>& seen) {
  if (!v || !seen.insert(v.get()).second) return;
  if (v->Is(pickle::Value::Kind::kObject)) fn(*v);
  for (const auto& x : v->items) ForEachObject(x, fn, seen);
  for (const auto& [k, x] : v->dict) {
    ForEachObject(k, fn, seen);
    ForEachObject(x, fn, seen);
  }
  ForEachObject(v->args, fn, seen);
  ForEachObject(v->state, fn, seen);
}

void RemoveKey(pickle::Value& dict, const std::string& key) {
  auto& d = dict.dict;
  d.erase(std::remove_if(d.begin(), d.end(), [&](const auto& kv) { return kv.first->str == key; }), d.end());
}

// What PyTorch 2.3 to 2.11 have written: TensorProperties under its older module, no version
// and no storage_meta (2.3), checkpoint_id as a pathlib._local path (Python 3.13), and
// _StorageInfo with an empty list of transform descriptors (2.7+).
TEST(Dcp, AcceptsTheMetadataVariantsPyTorchHasWrittenSince23) {
  TempDir dir;
  const StateDict saved = Sample();
  save(saved, DcpWriter(dir.path()));
  const std::string md_path = dir.path() + "/.metadata";
  const auto allow_all = [](const std::string&, const std::string&) { return true; };
  using pickle::Value;

  const std::string original = ReadFile(md_path);
  const std::vector<std::string> variants = {"old-module", "unversioned", "pathlib-local", "transforms"};
  for (const std::string& variant : variants) {
    const pickle::ValuePtr root = pickle::Decode(original, allow_all, md_path);
    std::set<const Value*> seen;
    ForEachObject(root, [&](Value& o) {
      if (variant == "old-module" && o.IsObjectOf("torch.distributed.checkpoint.metadata", "TensorProperties")) {
        o.cls = Value::Global("torch.distributed._shard.sharded_tensor.metadata", "TensorProperties");
        o.state->items[3]->cls = Value::Global("torch.distributed._shard.sharded_tensor.metadata", "MEM_FORMAT_ENCODING");
      }
      if (variant == "transforms" && o.IsObjectOf("torch.distributed.checkpoint.filesystem", "_StorageInfo")) {
        o.state->dict.push_back({Value::Str("transform_descriptors"), Value::List({})});
      }
    }, seen);
    if (variant == "unversioned") {
      RemoveKey(*root->state, "version");
      RemoveKey(*root->state, "storage_meta");
    }
    if (variant == "pathlib-local") {
      const pickle::ValuePtr meta = root->Attr("storage_meta");
      ASSERT_NE(meta, nullptr);
      auto path = std::make_shared<Value>();
      path->kind = Value::Kind::kObject;
      path->cls = Value::Global("pathlib._local", "PosixPath");
      path->args = Value::Tuple({Value::Str("/"), Value::Str("tmp"), Value::Str("ckpt")});
      RemoveKey(*meta->state, "checkpoint_id");
      meta->state->dict.push_back({Value::Str("checkpoint_id"), path});
    }
    pickle::Writer w(2);
    WriteFile(md_path, w.Put(*root).Finish());
    StateDict loaded = Targets(saved);
    load(loaded, DcpReader(dir.path()));
    for (const TensorEntry& e : saved.tensors()) {
      EXPECT_TRUE(Same(Full(saved, e.fqn), loaded.FindTensor(e.fqn)->chunks[0].tensor)) << variant << " " << e.fqn;
    }
  }
  // A transform (e.g. compression) is refused by name.
  const pickle::ValuePtr root = pickle::Decode(original, allow_all, md_path);
  std::set<const Value*> seen;
  ForEachObject(root, [&](Value& o) {
    if (o.IsObjectOf("torch.distributed.checkpoint.filesystem", "_StorageInfo")) {
      RemoveKey(*o.state, "transform_descriptors");
      o.state->dict.push_back({Value::Str("transform_descriptors"), Value::List({Value::Str("zstd")})});
    }
  }, seen);
  pickle::Writer w(2);
  WriteFile(md_path, w.Put(*root).Finish());
  StateDict t = Targets(saved);
  EXPECT_HAS(ErrorOf([&] { load(t, DcpReader(dir.path())); }), "stream transforms ['zstd']");
}

}  // namespace
}  // namespace dcpp
