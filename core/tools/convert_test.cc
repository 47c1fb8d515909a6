// convert(): layouts, key remapping, bounded memory, and bad input. Checkpoints are made with
// save() and checked by loading the result with load() in the target layout.
#include "core/tools/convert.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/dcpp.h"
#include "core/format/checksum.h"
#include "core/format/metadata.h"
#include "core/model/dtype.h"
#include "core/testing/errors.h"
#include "core/testing/full_disk.h"
#include "core/testing/temp_dir.h"

namespace dcpp {
namespace {

using testing::FullDiskWriter;
using testing::ErrorOf;
using testing::TempDir;
namespace fs = std::filesystem;

using Tensors = std::vector<std::pair<std::string, at::Tensor>>;

// Saves `tensors` as `world` ranks would, each key laid out by `layout_of`.
void SaveAllRanks(const Tensors& tensors, const std::function<Layout(const std::string&)>& layout_of,
                  const std::string& dir, const std::map<std::string, std::string>& blobs = {}) {
  StateDict sd;
  for (const auto& [fqn, t] : tensors) {
    const Layout l = layout_of(fqn);
    for (int64_t r = 0; r < l.world_size(); ++r) sd.AddSharded(fqn, t, l, r);
  }
  for (const auto& [k, v] : blobs) sd.AddBytes(k, v);
  save(sd, dir);
}

// Loads key `fqn` of `dir` as rank `rank` of `layout` and checks it equals that part of `full`.
void ExpectLoads(const std::string& dir, const std::string& fqn, const at::Tensor& full,
                 const Layout& layout) {
  for (int64_t r = 0; r < layout.world_size(); ++r) {
    StateDict sd;
    sd.AddUnallocated(fqn, full.scalar_type(), full.sizes().vec(), layout, r);
    load(sd, dir);
    const LocalChunk& c = sd.FindTensor(fqn)->chunks.at(0);
    at::Tensor want = full;
    for (size_t d = 0; d < c.box.sizes.size(); ++d) {
      want = want.narrow(static_cast<int64_t>(d), c.box.offsets[d], c.box.sizes[d]);
    }
    EXPECT_TRUE(at::equal(c.tensor, want)) << fqn << " rank " << r << " of " << layout.ToString();
  }
}

proto::Metadata ReadMd(const std::string& dir) {
  return ParseMetadata(FileSystemReader(dir).ReadMetadata(), dir);
}

const proto::TensorMeta& Find(const proto::Metadata& md, const std::string& fqn) {
  for (const auto& t : md.tensors()) {
    if (t.fqn() == fqn) return t;
  }
  throw Error("no key " + fqn);
}

// The seed MLP (net1 = Linear(10, 16), net2 = Linear(16, 10)).
Tensors Mlp() {
  at::manual_seed(0);
  return {{"net1.weight", at::rand({16, 10})}, {"net1.bias", at::rand({16})},
          {"net2.weight", at::rand({10, 16})}, {"net2.bias", at::rand({10})}};
}

TEST(Convert, FsdpMlpToTpColumnAndRowWise) {
  TempDir dir;
  const Tensors mlp = Mlp();
  SaveAllRanks(mlp, [](const std::string&) { return Layout::Sharded(2, 0); }, dir / "fsdp");
  ConvertOptions opt;
  opt.world_size = 2;
  const ConvertStats st = convert(dir / "fsdp", dir / "tp", opt);

  ExpectLoads(dir / "tp", "net1.weight", mlp[0].second, Layout::Sharded(2, 0));
  ExpectLoads(dir / "tp", "net1.bias", mlp[1].second, Layout::Sharded(2, 0));
  ExpectLoads(dir / "tp", "net2.weight", mlp[2].second, Layout::Sharded(2, 1));
  ExpectLoads(dir / "tp", "net2.bias", mlp[3].second, Layout::Replicated(2));

  // The stored chunks are the TP ones, each rank's in a file of its own.
  const proto::Metadata md = ReadMd(dir / "tp");
  EXPECT_EQ(md.world_size(), 2);
  ASSERT_EQ(md.mesh_shape_size(), 1);
  const proto::TensorMeta& w2 = Find(md, "net2.weight");
  ASSERT_EQ(w2.chunks_size(), 2);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(w2.chunks(r).offsets(1), 8 * r);
    EXPECT_EQ(w2.chunks(r).sizes(1), 8);
    EXPECT_EQ(w2.chunks(r).file().rfind("__" + std::to_string(r) + "_", 0), 0u) << w2.chunks(r).file();
  }
  EXPECT_EQ(Find(md, "net2.bias").chunks_size(), 1);  // replicated: stored once

  ASSERT_EQ(st.keys.size(), 4u);
  EXPECT_EQ(st.keys[0].key, "net1.bias");
  EXPECT_EQ(st.keys[0].source_layout, "Shard(0)@[2]");
  EXPECT_EQ(st.keys[3].key, "net2.weight");
  EXPECT_EQ(st.keys[3].target_layout, "Shard(1)@[2]");
  EXPECT_EQ(st.chunks_verified, 8);  // every source chunk, whole
  EXPECT_EQ(st.bytes_read, (160 + 16 + 160 + 10) * 4);
}

// Tiny budgets force many bands per tensor and many jobs; the result must not change, and
// the buffers in use must stay within the budget.
TEST(Convert, BoundedMemoryManyBands) {
  TempDir dir;
  at::manual_seed(1);
  const Tensors t = {{"big.weight", at::rand({300, 70})}, {"net2.weight", at::rand({90, 64})},
                     {"v", at::rand({5000})}, {"s", at::scalar_tensor(3.5)}};
  SaveAllRanks(t, [](const std::string& k) { return k == "s" ? Layout::Replicated(3) : Layout::Sharded(3, 0); },
               dir / "src");
  for (int64_t budget : {int64_t{8} << 10, int64_t{40} << 10, int64_t{1} << 30}) {
    ConvertOptions opt;
    opt.world_size = 4;
    opt.memory_budget = budget;
    opt.overwrite = true;
    opt.planner_options["colwise"] = "big";
    int64_t last = 0, total = 0;
    opt.progress = [&](int64_t done, int64_t all) {
      EXPECT_GE(done, last);
      last = done;
      total = all;
    };
    const ConvertStats st = convert(dir / "src", dir / "dst", opt);
    EXPECT_LE(st.peak_buffer_bytes, budget) << budget;
    EXPECT_EQ(last, total);
    EXPECT_EQ(st.bytes_written, total);
    ExpectLoads(dir / "dst", "big.weight", t[0].second, Layout::Sharded(4, 0));
    ExpectLoads(dir / "dst", "net2.weight", t[1].second, Layout::Sharded(4, 1));
    ExpectLoads(dir / "dst", "v", t[2].second, Layout::Replicated(4));
    ExpectLoads(dir / "dst", "s", t[3].second, Layout::Replicated(4));
  }
}

// --dtype: floating tensors cast band by band (1-D ones by whole elements, row-wise targets
// through the copy path), per key pattern; integers untouched; values as Tensor.to() makes them.
TEST(Convert, CastsOnTheWayOutPerKeyPattern) {
  TempDir dir;
  at::manual_seed(2);
  const Tensors t = {{"big.weight", at::randn({300, 70})}, {"net2.weight", at::randn({90, 64})},
                     {"v", at::randn({5000}, at::kDouble)}, {"s", at::scalar_tensor(3.3)},
                     {"h", at::randn({33}).to(at::kHalf)}, {"norm.weight", at::randn({70})},
                     {"step", at::arange(12, at::kLong)}};
  SaveAllRanks(t, [](const std::string& k) { return k == "s" ? Layout::Replicated(3) : Layout::Sharded(3, 0); },
               dir / "src");
  for (int64_t budget : {int64_t{8} << 10, int64_t{1} << 30}) {
    ConvertOptions opt;
    opt.world_size = 4;
    opt.memory_budget = budget;
    opt.overwrite = true;
    opt.planner_options["colwise"] = "big";
    opt.dtype_casts = {"*norm*=keep", "bf16", "v=fp16"};
    const ConvertStats st = convert(dir / "src", dir / "dst", opt);
    EXPECT_LE(st.peak_buffer_bytes, budget) << budget;
    const proto::Metadata md = ReadMd(dir / "dst");
    std::map<std::string, c10::ScalarType> want = {
        {"big.weight", at::kBFloat16}, {"net2.weight", at::kBFloat16}, {"v", at::kHalf}, {"s", at::kBFloat16},
        {"h", at::kBFloat16}, {"norm.weight", at::kFloat}, {"step", at::kLong}};
    for (const auto& [key, full] : t) {
      const at::Tensor cast = full.to(want.at(key));
      EXPECT_EQ(Find(md, key).dtype(), DtypeName(want.at(key))) << key;
      const Layout l = key == "s" || key == "v" || key == "h" || key == "norm.weight" || key == "step"
                           ? Layout::Replicated(4)
                           : Layout::Sharded(4, key == "net2.weight" ? 1 : 0);
      ExpectLoads(dir / "dst", key, cast, l);
    }
    const proto::Metadata src_md = ReadMd(dir / "src");
    for (const ConvertedKey& k : st.keys) {  // (loading above checked every chunk's checksum)
      EXPECT_EQ(k.dtype, Find(src_md, k.key).dtype()) << k.key;
      EXPECT_EQ(k.target_dtype, DtypeName(want.at(k.key))) << k.key;
    }
  }
  EXPECT_HAS(ErrorOf([&] {
               ConvertOptions opt;
               opt.dtype_casts = {"*=int8"};
               convert(dir / "src", dir / "bad", opt);
             }),
             "dtype rule '*=int8': unknown dtype 'int8'");
  EXPECT_FALSE(fs::exists(fs::path(dir / "bad") / ".metadata"));
}

TEST(Convert, TpBackToFsdpOverThreeRanks) {
  TempDir dir;
  const Tensors mlp = Mlp();
  SaveAllRanks(mlp, [](const std::string&) { return Layout::Sharded(2, 0); }, dir / "fsdp");
  ConvertOptions to_tp;
  convert(dir / "fsdp", dir / "tp", to_tp);
  ConvertOptions to_fsdp;
  to_fsdp.planner = "planners/to_fsdp.lua";
  to_fsdp.world_size = 3;
  convert(dir / "tp", dir / "fsdp3", to_fsdp);
  for (const auto& [k, v] : mlp) ExpectLoads(dir / "fsdp3", k, v, Layout::Sharded(3, 0));
  EXPECT_EQ(Find(ReadMd(dir / "fsdp3"), "net1.weight").chunks_size(), 3);
}

TEST(Convert, RemapsWrapperPrefixesAndOptimizerStateFollowsItsParameter) {
  TempDir dir;
  at::manual_seed(2);
  const at::Tensor wq = at::rand({8, 4}), wo = at::rand({4, 8}), avg = at::rand({4, 8});
  const at::Tensor step = at::scalar_tensor(5, at::kLong), norm = at::rand({4});
  SaveAllRanks({{"module._orig_mod.layers.0._fsdp_wrapped_module.attention.wq.weight", wq},
                {"module.layers.0.attention.wo.weight", wo},
                {"optim.state.module.layers.0.attention.wo.weight.exp_avg", avg},
                {"optim.state.layers.0.attention.wo.weight.step", step},
                {"layers.0.attention_norm.weight", norm}},
               [](const std::string& k) { return k.find(".step") != std::string::npos ? Layout::Replicated(2) : Layout::Sharded(2, 0); },
               dir / "src", {{"optim.param_groups", "lr=0.1"}});
  convert(dir / "src", dir / "dst", ConvertOptions{});
  ExpectLoads(dir / "dst", "layers.0.attention.wq.weight", wq, Layout::Sharded(2, 0));
  ExpectLoads(dir / "dst", "layers.0.attention.wo.weight", wo, Layout::Sharded(2, 1));
  ExpectLoads(dir / "dst", "optim.state.layers.0.attention.wo.weight.exp_avg", avg, Layout::Sharded(2, 1));
  ExpectLoads(dir / "dst", "optim.state.layers.0.attention.wo.weight.step", step, Layout::Replicated(2));
  ExpectLoads(dir / "dst", "layers.0.attention_norm.weight", norm, Layout::Replicated(2));
  StateDict blob;
  blob.AddBytes("optim.param_groups", "");
  load(blob, dir / "dst");
  EXPECT_EQ(blob.FindBytes("optim.param_groups")->data, "lr=0.1");

  // User rules through options: a rename and a drop.
  ConvertOptions opt;
  opt.planner_options = {{"rename", "^layers%.=>model.layers."}, {"drop", "optim.**"}};
  const ConvertStats st = convert(dir / "src", dir / "dst2", opt);
  const proto::Metadata md = ReadMd(dir / "dst2");
  EXPECT_EQ(md.tensors_size(), 3);
  EXPECT_NO_THROW(Find(md, "model.layers.0.attention.wo.weight"));
  EXPECT_EQ(st.dropped.size(), 3u);  // two optimizer tensors and the param groups
}

TEST(Convert, EveryDtypeAndEmptyTensorsRoundTrip) {
  TempDir dir;
  Tensors t;
  for (auto dtype : {at::kBFloat16, at::kHalf, at::kDouble, at::kInt, at::kBool, at::kComplexFloat}) {
    t.emplace_back(std::string("net1.") + c10::toString(dtype), at::rand({6, 5}).mul(3).to(dtype));
  }
  t.emplace_back("net2.empty", at::rand({0, 4}));
  t.emplace_back("net2.weight", at::rand({3, 0}));
  SaveAllRanks(t, [](const std::string&) { return Layout::Sharded(2, 0); }, dir / "src");
  convert(dir / "src", dir / "dst", ConvertOptions{});
  for (const auto& [k, v] : t) {
    ExpectLoads(dir / "dst", k, v, k == "net2.weight" ? Layout::Sharded(2, 1) : Layout::Sharded(2, 0));
  }
}

// Any string PyTorch takes as a key is one here: "" ({"": t} is a valid state dict), spaces,
// unicode, runs of dots. Saved, loaded, and converted by every shipped planner, into dcpp's
// format and PyTorch's.
TEST(Convert, AnyStringIsAKeyThroughEveryShippedPlanner) {
  TempDir dir;
  at::manual_seed(4);
  const Tensors tensors = {{"", at::rand({4, 3})},
                           {" ", at::rand({4})},
                           {"a b.c d", at::rand({2, 6})},
                           {"\xc3\xbcn\xc3\xaf.c\xc3\xb6" "de", at::rand({6})},
                           {"a..b.", at::scalar_tensor(7, at::kLong)}};
  SaveAllRanks(tensors, [](const std::string& k) { return k == "a..b." ? Layout::Replicated(2) : Layout::Sharded(2, 0); },
               dir / "src", {{"b y", "tab"}});
  for (const auto& [k, v] : tensors) {
    ExpectLoads(dir / "src", k, v, v.dim() == 0 ? Layout::Replicated(3) : Layout::Sharded(3, 0));
  }

  int n = 0;
  for (const char* planner : {"planners/fsdp_to_tp.lua", "planners/to_fsdp.lua", "planners/examples/file_per_key.lua",
                              "planners/examples/inference_export.lua", "planners/examples/hf_to_torchtitan.lua"}) {
    for (Format format : {Format::kNative, Format::kDcp}) {
      SCOPED_TRACE(std::string(planner) + " to " + format.name());
      ConvertOptions opt;
      opt.planner = planner;
      opt.format = format;
      if (std::string(planner) == "planners/examples/inference_export.lua") opt.planner_options["keep_bytes"] = "b y";
      const std::string dst = dir / ("dst" + std::to_string(n++));
      const ConvertStats st = convert(dir / "src", dst, opt);
      EXPECT_TRUE(st.dropped.empty());
      for (const auto& [k, v] : tensors) ExpectLoads(dst, k, v, Layout::Replicated(2));
      StateDict blob;
      blob.AddBytes("b y", "");
      load(blob, dst);
      // (DCP stores a bytes entry as a torch.save'd Python bytes object: b"tab" in a zip.)
      const std::string& data = blob.FindBytes("b y")->data;
      if (format == Format::kNative) {
        EXPECT_EQ(data, "tab");
      } else {
        EXPECT_EQ(data.rfind("PK", 0), 0u);
        EXPECT_NE(data.find("C\x03tab"), std::string::npos);
      }
    }
  }
}

// ---- bad input: a clear error, and the destination never damaged ----

void WritePlanner(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

TEST(ConvertErrors, PlannerMistakesNameTheKeyAndScript) {
  TempDir dir;
  SaveAllRanks(Mlp(), [](const std::string&) { return Layout::Sharded(2, 0); }, dir / "src");
  ConvertOptions opt;
  opt.planner_options["no_such_option"] = "1";
  std::string err = ErrorOf([&] { convert(dir / "src", dir / "dst", opt); });
  EXPECT_HAS(err, "has no option 'no_such_option'");
  EXPECT_HAS(err, "colwise");

  const std::string script = dir / "p.lua";
  opt = ConvertOptions{};
  opt.planner = script;
  WritePlanner(script, "local P = {}\nfunction P.convert(ctx, md)\n  return {{key = 'net1.weight', layout = 'Shard(2)'}}\nend\nreturn P\n");
  err = ErrorOf([&] { convert(dir / "src", dir / "dst", opt); });
  EXPECT_HAS(err, "key 'net1.weight' gets Shard(2) but its tensor has 2 dimensions");
  EXPECT_HAS(err, script);

  WritePlanner(script, "local P = {}\nfunction P.convert(ctx, md)\n  return {{key = 'x', source = 'nope', layout = 'Shard(0)'}}\nend\nreturn P\n");
  EXPECT_HAS(ErrorOf([&] { convert(dir / "src", dir / "dst", opt); }), "reads 'nope', which the checkpoint does not have");

  WritePlanner(script, "local P = {}\nfunction P.convert(ctx, md)\n  return {{key = 'a', source = 'net1.weight', layout = 'Replicate()'}, {key = 'a', source = 'net1.bias', layout = 'Replicate()'}}\nend\nreturn P\n");
  EXPECT_HAS(ErrorOf([&] { convert(dir / "src", dir / "dst", opt); }), "key 'a' is produced twice");

  WritePlanner(script, "local P = {}\nfunction P.convert(ctx, md)\n  return {{key = 'a', source = 'net1.weight', layout = 'Diagonal(0)'}}\nend\nreturn P\n");
  EXPECT_HAS(ErrorOf([&] { convert(dir / "src", dir / "dst", opt); }), "unknown placement 'Diagonal(0)'");

  WritePlanner(script, "local P = {}\nfunction P.convert(ctx, md)\n  return {}, {3}\nend\nreturn P\n");
  EXPECT_HAS(ErrorOf([&] { convert(dir / "src", dir / "dst", opt); }), "the target world size is 2");

  // Numbers out of range are refused naming the text or the value, not wrapped.
  WritePlanner(script, "local P = {}\nfunction P.convert(ctx, md)\n  return {{key = 'a', source = 'net1.weight', layout = 'Shard(99999999999999999999)'}}\nend\nreturn P\n");
  err = ErrorOf([&] { convert(dir / "src", dir / "dst", opt); });
  EXPECT_HAS(err, "'Shard(99999999999999999999)'");
  EXPECT_HAS(err, "out of range");
  EXPECT_HAS(err, "key 'a'");
  WritePlanner(script, "local P = {}\nfunction P.convert(ctx, md)\n  return {}, {1e30}\nend\nreturn P\n");
  EXPECT_HAS(ErrorOf([&] { convert(dir / "src", dir / "dst", opt); }), "the mesh it returned: element 1");
  WritePlanner(script, "local P = {}\nfunction P.convert(ctx, md)\n  return {}, {-1, -2}\nend\nreturn P\n");
  EXPECT_HAS(ErrorOf([&] { convert(dir / "src", dir / "dst", opt); }), "a dimension of -1 ranks");
  EXPECT_FALSE(fs::exists(dir / "dst/.metadata"));

  WritePlanner(script, "local P = {}\nfunction P.convert(ctx, md)\n  local x = nil\n  return x.field\nend\nreturn P\n");
  err = ErrorOf([&] { convert(dir / "src", dir / "dst", opt); });
  EXPECT_HAS(err, "p.lua:4: attempt to index");  // (Lua shortens long chunk names)

  EXPECT_FALSE(fs::exists(dir / "dst/.metadata"));
}

TEST(ConvertErrors, RefusesToReplaceACheckpointUnlessAskedAndNeverDamagesIt) {
  TempDir dir;
  const Tensors mlp = Mlp();
  SaveAllRanks(mlp, [](const std::string&) { return Layout::Sharded(2, 0); }, dir / "src");
  at::manual_seed(9);
  const Tensors other = {{"net1.weight", at::rand({16, 10})}};
  SaveAllRanks(other, [](const std::string&) { return Layout::Replicated(1); }, dir / "dst");
  const std::string err = ErrorOf([&] { convert(dir / "src", dir / "dst", ConvertOptions{}); });
  EXPECT_HAS(err, "already holds a checkpoint; pass --overwrite");
  ExpectLoads(dir / "dst", "net1.weight", other[0].second, Layout::Replicated(1));

  // A full disk halfway through an --overwrite conversion: the old checkpoint still loads and
  // nothing of the failed conversion is left.
  std::set<std::string> before;
  for (const auto& f : fs::directory_iterator(dir / "dst")) before.insert(f.path().filename());
  ConvertOptions opt;
  opt.overwrite = true;
  FileSystemReader src(dir / "src");
  FullDiskWriter full(dir / "dst", 300);
  EXPECT_HAS(ErrorOf([&] { convert(src, full, opt); }), "No space left on device");
  std::set<std::string> after;
  for (const auto& f : fs::directory_iterator(dir / "dst")) after.insert(f.path().filename());
  EXPECT_EQ(before, after);
  ExpectLoads(dir / "dst", "net1.weight", other[0].second, Layout::Replicated(1));

  // With --overwrite it is replaced, and the old data files go once the new one commits.
  convert(dir / "src", dir / "dst", opt);
  ExpectLoads(dir / "dst", "net1.weight", mlp[0].second, Layout::Sharded(2, 0));
  for (const std::string& f : before) {
    if (f != ".metadata") {
      EXPECT_FALSE(fs::exists(dir / ("dst/" + f))) << f;
    }
  }
}

TEST(ConvertErrors, CorruptOrMissingSource) {
  TempDir dir;
  EXPECT_HAS(ErrorOf([&] { convert(dir / "nothing", dir / "dst", ConvertOptions{}); }), dir / "nothing");
  SaveAllRanks(Mlp(), [](const std::string&) { return Layout::Sharded(2, 0); }, dir / "src");
  const proto::Metadata md = ReadMd(dir / "src");
  const proto::TensorMeta& w = Find(md, "net2.weight");
  {
    std::fstream f(dir / ("src/" + w.chunks(1).file()), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(w.chunks(1).offset() + 5));
    f.put('\x7f');
  }
  const std::string err = ErrorOf([&] { convert(dir / "src", dir / "dst", ConvertOptions{}); });
  EXPECT_HAS(err, "checksum mismatch for key 'net2.weight'");
  EXPECT_HAS(err, w.chunks(1).file());
  EXPECT_FALSE(fs::exists(dir / "dst/.metadata"));
  EXPECT_TRUE(!fs::exists(dir / "dst") || fs::is_empty(dir / "dst"));
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A bool byte other than 0 or 1 would be copied into a checkpoint that load refuses: convert
// refuses it, with checksums verified or not (the checksum here matches the bad byte).
TEST(ConvertErrors, BoolByteOtherThan0Or1IsRefused) {
  TempDir dir;
  StateDict sd;
  sd.AddTensor("mask", at::arange(24).reshape({4, 6}).remainder(3).eq(0));
  save(sd, dir / "src");
  proto::Metadata md = ReadMd(dir / "src");
  proto::ChunkMeta* c = md.mutable_tensors(0)->mutable_chunks(0);
  std::string data = ReadBytes(dir / ("src/" + c->file()));
  data[c->offset() + 2 * 6 + 3] = '\x02';
  WriteBytes(dir / ("src/" + c->file()), data);
  c->set_checksum(Checksum::Of(data.data() + c->offset(), c->length()));
  WriteBytes(dir / "src/.metadata", SerializeMetadata(md));
  for (bool verify : {true, false}) {
    ConvertOptions opt;
    opt.verify_checksums = verify;
    const std::string err = ErrorOf([&] { convert(dir / "src", dir / "dst", opt); });
    EXPECT_HAS(err, "key 'mask' chunk [0:4, 0:6] in " + (dir / "src") + "/" + c->file() +
                        ": element [2, 3] is the byte 0x02, not a bool");
    EXPECT_FALSE(fs::exists(dir / "dst/.metadata"));
  }
}

// An empty chunk and a zero-length blob are never read: their files need not exist.
TEST(Convert, EmptyChunkAndZeroLengthBlobNeedNoFile) {
  TempDir dir;
  StateDict sd;
  sd.AddTensor("empty", at::zeros({0, 4}));
  sd.AddTensor("w", at::arange(8, at::kFloat).reshape({2, 4}));
  sd.AddBytes("none", "");
  save(sd, dir / "src");
  proto::Metadata md = ReadMd(dir / "src");
  for (auto& t : *md.mutable_tensors()) {
    if (t.fqn() != "empty") continue;
    t.mutable_chunks(0)->set_file("__77_77.distcp");
    t.mutable_chunks(0)->set_offset(uint64_t{1} << 40);
  }
  md.mutable_bytes(0)->set_file("__78_78.distcp");
  md.mutable_bytes(0)->set_offset(uint64_t{1} << 40);
  WriteBytes(dir / "src/.metadata", SerializeMetadata(md));
  for (Format format : {Format::kNative, Format::kDcp}) {
    const std::string out = dir / format.name();
    ConvertOptions opt;
    opt.format = format;
    convert(dir / "src", out, opt);
    StateDict back;
    back.AddTensor("empty", at::zeros({0, 4}));
    back.AddTensor("w", at::zeros({2, 4}));
    back.AddBytes("none", "stale");
    load(back, out);
    // (DCP stores a blob as a torch.save'd bytes object, which a load hands back as it is.)
    if (format == Format::kNative) {
      EXPECT_EQ(back.FindBytes("none")->data, "");
    }
    EXPECT_TRUE(at::equal(back.FindTensor("w")->chunks[0].tensor, at::arange(8, at::kFloat).reshape({2, 4})));
  }
}

TEST(DescribeChunking, NamesCommonLayouts) {
  EXPECT_EQ(DescribeChunking({4, 6}, {{0, 0}}, {{4, 6}}), "whole");
  EXPECT_EQ(DescribeChunking({4, 6}, {{0, 0}, {2, 0}}, {{2, 6}, {2, 6}}), "Shard(0)@[2]");
  EXPECT_EQ(DescribeChunking({4, 6}, {{0, 0}, {0, 3}, {2, 0}, {2, 3}}, {{2, 3}, {2, 3}, {2, 3}, {2, 3}}),
            "Shard(0)xShard(1)@[2,2]");
  EXPECT_EQ(DescribeChunking({4, 6}, {{0, 0}, {1, 0}, {1, 3}}, {{1, 6}, {3, 3}, {3, 3}}), "3 chunks");
}

}  // namespace
}  // namespace dcpp
