// pickle::Decode on what CPython and PyTorch wrote: every protocol of one nested value, and
// DCP's .metadata and torch.save's data.pkl navigated as their readers do.
#include "core/storage/dcp/pickle.h"

#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/base/error.h"
#include "core/storage/dcp/pickle_test_data.h"
#include "core/testing/errors.h"

namespace dcpp {
namespace pickle {
namespace {

using ::dcpp::testing::ErrorOf;

// ------------------------------------------------------------------ CPython's own pickles

const char kNestedRepr[] =
    "{'ints': (0, 1, 255, 256, 65535, 65536, -1, -128, -129, -32768, 2147483647, 2147483648, "
    "-2147483648, -2147483649, 1099511627776, 9223372036854775807, -9223372036854775808), "
    "'floats': [0.0, 1.5, -2.25, 1e+300, 0.1], 'text': 'héllo €\\\\n', "
    "'bytes': b'\\x00\\xff\\x80ab', 'set': {1, 2, 3}, 'frozen': {4}, "
    "'nbt': [None, True, False], 'shared': ([1, 2], [1, 2]), 'empty': ((), [], {})}";

TEST(PickleCPython, EveryProtocolDecodesToTheSameTree) {
  const auto allow = Allow({"builtins.set", "builtins.frozenset", "_codecs.encode"});
  for (int p = 0; p <= 5; ++p) {
    SCOPED_TRACE(p);
    const ValuePtr v = Decode(kNested[p], allow, "nested.pkl");
    EXPECT_EQ(R(Normalize(v)), kNestedRepr);
    // Protocols 0-3 spell a set as set([...]); 0-2 name it __builtin__.set, read as builtins.
    EXPECT_EQ(v->Get("set")->IsObjectOf("builtins", "set"), p < 4);
    EXPECT_EQ(v->Get("set")->Is(K::kSet), p >= 4);
    EXPECT_EQ(v->Get("bytes")->IsObjectOf("_codecs", "encode"), p < 3);
    // The shared list is one Value, as it is one object in Python.
    const auto& shared = v->Get("shared")->AsSeq("shared");
    ASSERT_EQ(shared.size(), 2u);
    EXPECT_EQ(shared[0].get(), shared[1].get());
    // Exact values, not only their text.
    const auto& ints = v->Get("ints")->AsSeq("ints");
    ASSERT_EQ(ints.size(), 17u);
    EXPECT_EQ(ints[11]->AsInt("2**31"), int64_t{1} << 31);
    EXPECT_EQ(ints[13]->AsInt("-2**31-1"), -(int64_t{1} << 31) - 1);
    EXPECT_EQ(ints[15]->AsInt("max"), std::numeric_limits<int64_t>::max());
    EXPECT_EQ(ints[16]->AsInt("min"), std::numeric_limits<int64_t>::min());
    EXPECT_EQ(v->Get("floats")->items[3]->f, 1e300);
    EXPECT_EQ(v->Get("floats")->items[4]->f, 0.1);
    EXPECT_EQ(v->Get("text")->AsStr("text"), "h\u00e9llo \u20ac\\n");
    const auto& nbt = v->Get("nbt")->items;
    EXPECT_TRUE(nbt[0]->Is(K::kNone));
    EXPECT_TRUE(nbt[1]->Is(K::kBool) && nbt[1]->b);  // protocols 0-1: INT "01"
    EXPECT_TRUE(nbt[2]->Is(K::kBool) && !nbt[2]->b);
  }
}

TEST(PickleCPython, SetsAndBytesOfOldProtocolsNeedTheirGlobals) {
  EXPECT_HAS(ErrorOf([] { Decode(kNested[0], Allow({"_codecs.encode"}), "p0.pkl"); }),
             "global 'builtins.set' is not allowed in p0.pkl");
  EXPECT_HAS(ErrorOf([] { Decode(kNested[2], Allow({"builtins.set"}), "p2.pkl"); }),
             "global '_codecs.encode' is not allowed in p2.pkl");
  EXPECT_EQ(ErrorOf([] { Decode(kNested[4], Allow({}), "p4.pkl"); }), "(no error)");
}

TEST(PickleCPython, ByteArrayOfProtocol5) {
  const ValuePtr v = Decode(kByteArray5, Allow({}), "ba.pkl");
  ASSERT_TRUE(v->Is(K::kBytes));
  EXPECT_EQ(v->str, "\0ab"s);
}

// -------------------------------------------------------------------- PyTorch's pickles

const std::set<std::string> kDcpGlobals = {
    "torch.distributed.checkpoint.metadata.Metadata",
    "torch.distributed.checkpoint.metadata.TensorStorageMetadata",
    "torch.distributed.checkpoint.metadata.TensorProperties",
    "torch.distributed.checkpoint.metadata.ChunkStorageMetadata",
    "torch.distributed.checkpoint.metadata.BytesStorageMetadata",
    "torch.distributed.checkpoint.metadata.MetadataIndex",
    "torch.distributed.checkpoint.metadata.StorageMeta",
    "torch.distributed.checkpoint.metadata._MEM_FORMAT_ENCODING",
    "torch.distributed.checkpoint.filesystem._StorageInfo",
    "torch.serialization._get_layout",
    "torch.float32",
    "torch.Size",
    "pathlib.PosixPath",
};
const std::string kMd = "torch.distributed.checkpoint.metadata";

TEST(PickleTorch, DcpMetadataNavigates) {
  const ValuePtr md = Decode(kDcpMetadata, Allow(kDcpGlobals), "/tmp/dcpx/.metadata");
  ASSERT_TRUE(md->IsObjectOf(kMd, "Metadata"));
  EXPECT_EQ(md->Attr("version")->AsStr("version"), "1.0.0");
  EXPECT_EQ(md->Attr("no_such_field"), nullptr);

  const ValuePtr sdm = md->Attr("state_dict_metadata");
  ASSERT_TRUE(sdm && sdm->Is(K::kDict));
  ASSERT_EQ(sdm->dict.size(), 2u);
  const ValuePtr w = sdm->Get("w");
  ASSERT_TRUE(w->IsObjectOf(kMd, "TensorStorageMetadata"));
  const ValuePtr size = w->Attr("size");
  ASSERT_TRUE(size->IsObjectOf("torch", "Size"));
  ASSERT_EQ(size->args->items.size(), 1u);
  EXPECT_EQ(R(size->args->items[0]), "(2, 3)");
  EXPECT_EQ(R(size), "torch.Size((2, 3))");

  const auto& chunks = w->Attr("chunks")->AsSeq("chunks");
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(R(chunks[0]), kMd + ".ChunkStorageMetadata(offsets=torch.Size((0, 0)), "
                                "sizes=torch.Size((2, 3)))");

  // TensorProperties pickles a plain 5-tuple through __getstate__, not a dict: no Attr().
  const ValuePtr props = w->Attr("properties");
  ASSERT_TRUE(props->IsObjectOf(kMd, "TensorProperties"));
  EXPECT_EQ(props->Attr("dtype"), nullptr);
  ASSERT_TRUE(props->state && props->state->Is(K::kTuple));
  EXPECT_EQ(R(props->state), "(torch.float32, torch.serialization._get_layout('torch.strided'), "
                             "False, " + kMd + "._MEM_FORMAT_ENCODING(0), False)");
  EXPECT_TRUE(props->state->items[0]->IsGlobal("torch", "float32"));

  EXPECT_TRUE(sdm->Get("step")->IsObjectOf(kMd, "BytesStorageMetadata"));
  EXPECT_EQ(R(md->Attr("planner_data")), "{'w': ('w',), 'step': ('step',)}");

  // storage_data is keyed by MetadataIndex objects, not strings.
  const ValuePtr storage = md->Attr("storage_data");
  ASSERT_EQ(storage->dict.size(), 2u);
  std::set<std::string> fqns;
  for (const auto& [index, info] : storage->dict) {
    ASSERT_TRUE(index->IsObjectOf(kMd, "MetadataIndex"));
    ASSERT_TRUE(info->IsObjectOf("torch.distributed.checkpoint.filesystem", "_StorageInfo"));
    fqns.insert(index->Attr("fqn")->AsStr("fqn"));
    EXPECT_EQ(info->Attr("relative_path")->AsStr("relative_path"), "__0_0.distcp");
    EXPECT_GT(info->Attr("length")->AsInt("length"), 0);
  }
  EXPECT_EQ(fqns, (std::set<std::string>{"w", "step"}));
  // Fields left at their default are not pickled: 'step' has no offset.
  EXPECT_EQ(R(storage->dict[0].first), kMd + ".MetadataIndex(fqn='step', index=None)");
  EXPECT_EQ(R(storage->dict[1].first),
            kMd + ".MetadataIndex(fqn='w', index=0, offset=torch.Size((0, 0)))");

  const ValuePtr meta = md->Attr("storage_meta");
  ASSERT_TRUE(meta->IsObjectOf(kMd, "StorageMeta"));
  EXPECT_EQ(R(meta->Attr("checkpoint_id")), "pathlib.PosixPath('/', 'tmp', 'dcpx')");
  EXPECT_TRUE(meta->Attr("load_id")->Is(K::kNone));
}

TEST(PickleTorch, DcpMetadataWithoutTorchSizeIsRefusedNamingIt) {
  auto globals = kDcpGlobals;
  globals.erase("torch.Size");
  const std::string e =
      ErrorOf([&] { Decode(kDcpMetadata, Allow(globals), "/tmp/dcpx/.metadata"); });
  EXPECT_HAS(e, "global 'torch.Size' is not allowed in /tmp/dcpx/.metadata");
  EXPECT_HAS(e, "STACK_GLOBAL at byte");
}

TEST(PickleTorch, TorchSaveDataPkl) {
  const ValuePtr sd =
      Decode(kTorchSaveOrderedDict,
             Allow({"collections.OrderedDict", "torch._utils._rebuild_tensor_v2",
                    "torch.FloatStorage", "torch.LongStorage"}),
             "archive/data.pkl");
  // OrderedDict() is REDUCEd, then filled by SETITEMS: the pairs land in the object's dict.
  ASSERT_TRUE(sd->IsObjectOf("collections", "OrderedDict"));
  ASSERT_EQ(sd->dict.size(), 2u);
  EXPECT_EQ(sd->dict[0].first->AsStr("key"), "w");
  const ValuePtr w = sd->Get("w");
  ASSERT_TRUE(w->IsObjectOf("torch._utils", "_rebuild_tensor_v2"));
  const auto& a = w->args->items;
  ASSERT_EQ(a.size(), 6u);
  ASSERT_TRUE(a[0]->Is(K::kPersistent));
  EXPECT_EQ(R(a[0]->args), "('storage', torch.FloatStorage, '0', 'cpu', 6)");
  EXPECT_EQ(a[1]->AsInt("offset"), 0);
  EXPECT_EQ(R(a[2]), "(2, 3)");
  EXPECT_EQ(R(a[3]), "(3, 1)");
  EXPECT_EQ(R(a[4]), "False");
  // The backward hooks are OrderedDict() through BINGET 0, the same global as the container.
  EXPECT_TRUE(a[5]->IsObjectOf("collections", "OrderedDict"));
  EXPECT_EQ(a[5]->cls.get(), sd->cls.get());
  EXPECT_EQ(R(sd->Get("step")->args->items[0]->args),
            "('storage', torch.LongStorage, '1', 'cpu', 1)");
  EXPECT_EQ(R(sd->Get("step")->args->items[2]), "()");
}

}  // namespace
}  // namespace pickle
}  // namespace dcpp
