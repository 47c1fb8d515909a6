// metadata_scale: a checkpoint's metadata at 1,024 ranks and ~100,000 items, simulated without
// data: what the coordinator's commit and every rank's metadata read cost, and whether load
// planning stays linear.
//
// The items are those of bench/planning (~--items save items over all ranks, so items per rank
// shrink as ranks grow): 5/8 of the tensors 2-D Shard(0) over every rank, 1/8 1-D Shard(0),
// 1/4 replicated (written once, by rank i % R), plus "step" and one "rng.<r>" blob per rank.
// Each rank's write results (proto::WriteResults, as a rank sends them after writing) are built
// untimed; then, timed:
//   commit   the engine's own assembly (core/engine/save_internal.h BuildMetadata over every
//            rank's serialized results), SerializeMetadata, and FileSystemWriter::Commit (the
//            .metadata written, fsynced and renamed into place, in a folder on /dev/shm);
//   read     FileSystemReader::ReadMetadata and ParseMetadata (parse + every check the loader
//            makes), as each rank does after the broadcast;
//   bcast    the .metadata bytes broadcast from rank 0 to 4 gloo ranks (threads of this
//            process over an in-process store, tests/multirank/ranks.h): only 4 of the 1,024
//            ranks, so a lower bound for a real job, whose gloo broadcast of one buffer is a
//            tree or ring over the network;
//   plan     LoadPlanner::Local (the embedded default_load.lua) of one rank against the whole
//            metadata, with targets of another layout (bench/planning's: Shard(1), so each 2-D
//            target reads all R saved chunks of its tensor).
// Sizes: R = 1024 at --items / 4, / 2 and --items, then R = 256 at --items. Times are the
// median of --reps (default 5; the spread is printed); the growth ratios compare the best rep
// of each size, since on a shared machine noise only adds.
//
//   bazel run -c opt //bench:metadata_scale [-- --items=100000 --reps=5]
//
// Figures (at R = 1024, --items unless named):
//   metadata_bytes_1024        size of .metadata, bytes
//   metadata_commit_1024_s     commit (assembly + serialize + write), seconds (absolute)
//   metadata_read_1024_s       read + parse + checks on one rank, seconds (absolute)
//   metadata_bcast4_1024_s     broadcast of .metadata to 4 gloo ranks, seconds (absolute)
//   load_plan_1024_s           one rank's load plan, seconds (absolute)
//   metadata_read_growth_items   read time per item at --items / at --items/4 (1 = linear;
//                                the items are the metadata's chunks and blobs)
//   load_plan_growth_items       the same for the load plan
//   load_plan_growth_ranks       load plan per item at R = 1024 / at R = 256, same items (1 = no
//                                items x ranks term)
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "core/base/error.h"
#include "core/engine/save_internal.h"
#include "core/format/metadata.h"
#include "core/model/box.h"
#include "core/model/layout.h"
#include "core/planner/planner.h"
#include "core/storage/native/filesystem.h"
#include "tests/multirank/ranks.h"

namespace {

using namespace dcpp_bench;

struct Spec {
  std::string fqn;
  bool sharded = false;
  std::vector<int64_t> shape;
};

std::vector<Spec> Specs(int n) {
  std::vector<Spec> specs;
  for (int i = 0; i < n; ++i) {
    const int k = i % 8;
    const int64_t rows = 4096 * (1 + i % 4);
    Spec s{"layers." + std::to_string(i / 8) + ".p" + std::to_string(k), k <= 5, {}};
    s.shape = (k < 5 || k == 6) ? std::vector<int64_t>{rows, 2048} : std::vector<int64_t>{rows};
    specs.push_back(std::move(s));
  }
  return specs;
}

void SetBox(google::protobuf::RepeatedField<int64_t>* offsets, google::protobuf::RepeatedField<int64_t>* sizes,
            const dcpp::Box& b) {
  for (int64_t o : b.offsets) offsets->Add(o);
  for (int64_t s : b.sizes) sizes->Add(s);
}

// Every rank's serialized write results: what it wrote, 4 KiB-aligned in one file per rank.
std::vector<std::string> WriteResults(const std::vector<Spec>& specs, int world, int64_t* items) {
  std::vector<std::string> out(world);
  const dcpp::Layout rows = dcpp::Layout::Sharded(world, 0);
  *items = 0;
  for (int r = 0; r < world; ++r) {
    dcpp::proto::WriteResults wr;
    const std::string file = "__" + std::to_string(r) + "_0.distcp";
    uint64_t end = 0;
    const auto place = [&](uint64_t n) {
      const uint64_t off = (end + 4095) / 4096 * 4096;
      end = off + n;
      return off;
    };
    for (size_t i = 0; i < specs.size(); ++i) {
      const Spec& s = specs[i];
      if (!s.sharded && static_cast<int>(i % world) != r) continue;  // replicated: one writer
      const dcpp::Box box = s.sharded ? dcpp::BoxForRank(s.shape, rows, r) : dcpp::WholeBox(s.shape);
      dcpp::proto::TensorMeta* t = wr.add_tensors();
      t->set_fqn(s.fqn);
      t->set_dtype("float32");
      for (int64_t d : s.shape) t->add_shape(d);
      dcpp::proto::ChunkMeta* c = t->add_chunks();
      SetBox(c->mutable_offsets(), c->mutable_sizes(), box);
      c->set_file(file);
      c->set_length(static_cast<uint64_t>(box.numel() * 4));
      c->set_offset(place(c->length()));
      c->set_checksum(c->offset() * 0x9E3779B97F4A7C15ull ^ c->length());
      ++*items;
    }
    for (const std::string& blob : {std::string("step"), "rng." + std::to_string(r)}) {
      if (blob == "step" && r != 0) continue;
      dcpp::proto::BytesMeta* b = wr.add_bytes();
      b->set_fqn(blob);
      b->set_file(file);
      b->set_length(blob == "step" ? 8 : 5056);
      b->set_offset(place(b->length()));
      b->set_checksum(b->offset() ^ 7);
      ++*items;
    }
    wr.SerializeToString(&out[r]);
  }
  return out;
}

std::vector<dcpp::LoadTarget> Targets(const std::vector<Spec>& specs, int world, int rank) {
  std::vector<dcpp::LoadTarget> targets;
  for (size_t i = 0; i < specs.size(); ++i) {
    const Spec& s = specs[i];
    dcpp::Box box;
    if (s.shape.size() == 2) {
      box = dcpp::BoxForRank(s.shape, dcpp::Layout::Sharded(world, 1), rank);
    } else if (s.sharded) {
      box = dcpp::WholeBox(s.shape);
    } else {
      box = dcpp::BoxForRank(s.shape, dcpp::Layout::Sharded(world, 0), rank);
    }
    targets.push_back({s.fqn, false, "float32", s.shape, box});
  }
  targets.push_back({"step", true, "", {}, {}});
  targets.push_back({"rng." + std::to_string(rank), true, "", {}, {}});
  return targets;
}

struct Figures {
  int world = 0;
  int64_t items = 0, bytes = 0, reads = 0;
  std::vector<double> commit, read, bcast, plan;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string Spread(const std::vector<double>& v) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%.1f ms [%.1f..%.1f]", Median(v) * 1e3, *std::min_element(v.begin(), v.end()) * 1e3,
                *std::max_element(v.begin(), v.end()) * 1e3);
  return buf;
}

Figures Measure(int world, int total_items, int reps, bool broadcast, const ScratchDir& scratch) {
  Figures f;
  f.world = world;
  const int per_rank = std::max(10, total_items / world);
  const std::vector<Spec> specs = Specs(per_rank - 2);
  const std::vector<std::string> results = WriteResults(specs, world, &f.items);
  const std::string dir = scratch.Sub("w" + std::to_string(world) + "_" + std::to_string(total_items));
  for (int rep = 0; rep < reps; ++rep) {
    std::string bytes;
    dcpp::FileSystemWriter writer(dir);
    writer.Begin(false);  // (untimed: it reads the previous rep's .metadata, as a save's start does)
    f.commit.push_back(Time([&] {
      std::vector<std::string> files;
      const dcpp::proto::Metadata md = dcpp::internal::BuildMetadata(results, "dcpp", world, {}, &files);
      bytes = dcpp::SerializeMetadata(md);
      writer.Commit(bytes, files);
    }));
    writer.End();
    f.bytes = static_cast<int64_t>(bytes.size());
    dcpp::proto::Metadata md;
    f.read.push_back(Time([&] {
      dcpp::FileSystemReader reader(dir);
      md = dcpp::ParseMetadata(reader.ReadMetadata(), dir);
    }));
    const int reader_rank = world / 2 + 1;
    const std::vector<dcpp::LoadTarget> targets = Targets(specs, world, reader_rank);
    auto planner = dcpp::LoadPlanner::Create();
    dcpp::PlanContext ctx;
    ctx.rank = reader_rank;
    ctx.world_size = world;
    std::vector<int> missing;
    std::vector<dcpp::LoadRead> reads;
    f.plan.push_back(Time([&] { reads = planner->Local(ctx, targets, md, &missing); }));
    DCPP_CHECK(missing.empty(), "load plan: ", missing.size(), " targets missing");
    f.reads = static_cast<int64_t>(reads.size());
    if (broadcast) {
      double seconds = 0;
      const std::string errors = dcpp::testing::Joined(dcpp::testing::RunRanks(4, [&](int rank, dcpp::Comm& comm) {
        comm.Broadcast("", 0);  // the group is up
        std::string got;
        const double t = Time([&] { got = comm.Broadcast(rank == 0 ? bytes : std::string(), 0); });
        DCPP_CHECK(got == bytes, "rank ", rank, ": broadcast metadata differs");
        const std::vector<std::string> all = comm.Gather(std::to_string(t), 0);
        if (rank == 0) {
          for (const std::string& s : all) seconds = std::max(seconds, std::stod(s));
        }
      }));
      if (!errors.empty()) throw std::runtime_error("broadcast failed:\n" + errors);
      f.bcast.push_back(seconds);
    }
  }
  return f;
}

int Main(int argc, char** argv) {
  int items = 100000;
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--items=", 0) == 0) {
      items = std::stoi(a.substr(8));
    } else if (a.rfind("--reps=", 0) == 0) {
      reps = std::max(1, std::stoi(a.substr(7)));
    } else {
      std::cerr << "usage: metadata_scale [--items=N] [--reps=N]\n";
      return 2;
    }
  }
  at::set_num_threads(1);
  ScratchDir scratch("metadata_scale");
  std::cout << "metadata_scale: ~" << items << " items over all ranks, median of " << reps
            << " [min..max], in " << scratch.path() << "\n";
  std::vector<Figures> all;
  for (int n : {items / 4, items / 2, items}) all.push_back(Measure(1024, n, reps, n == items, scratch));
  all.push_back(Measure(256, items, reps, false, scratch));
  for (const Figures& f : all) {
    std::printf("R=%4d items=%7lld .metadata %8.2f MiB  commit %s  read+parse %s  load plan %s (%lld reads)%s%s\n",
                f.world, static_cast<long long>(f.items), static_cast<double>(f.bytes) / (1 << 20),
                Spread(f.commit).c_str(), Spread(f.read).c_str(), Spread(f.plan).c_str(),
                static_cast<long long>(f.reads), f.bcast.empty() ? "" : "  bcast to 4 ranks ",
                f.bcast.empty() ? "" : Spread(f.bcast).c_str());
  }
  const Figures& small = all[0];
  const Figures& big = all[2];
  const Figures& fewer = all[3];
  // Growth ratios from the best rep of each size: on a shared machine the noise only adds.
  const auto per_item = [](const std::vector<double>& v, const Figures& f) {
    return *std::min_element(v.begin(), v.end()) / static_cast<double>(f.items);
  };
  std::printf("BENCH metadata_bytes_1024 %lld bytes\n", static_cast<long long>(big.bytes));
  std::printf("BENCH metadata_commit_1024_s %.4f s\n", Median(big.commit));
  std::printf("BENCH metadata_read_1024_s %.4f s\n", Median(big.read));
  std::printf("BENCH metadata_bcast4_1024_s %.4f s\n", Median(big.bcast));
  std::printf("BENCH load_plan_1024_s %.4f s\n", Median(big.plan));
  std::printf("BENCH metadata_read_growth_items %.3f ratio\n", per_item(big.read, big) / per_item(small.read, small));
  std::printf("BENCH load_plan_growth_items %.3f ratio\n", per_item(big.plan, big) / per_item(small.plan, small));
  std::printf("BENCH load_plan_growth_ranks %.3f ratio\n", per_item(big.plan, big) / per_item(fewer.plan, fewer));
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return dcpp_bench::RunMain("metadata_scale", Main, argc, argv); }
