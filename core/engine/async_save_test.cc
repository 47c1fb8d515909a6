// async_save on CPU tensors: snapshot semantics, errors surfacing through wait(), and what a
// second save does while one is in flight.
#include "core/engine/async_save.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "core/testing/full_disk.h"
#include "core/testing/temp_dir.h"
#include "tests/multirank/ranks.h"

namespace dcpp {
namespace {

using testing::FullDiskWriter;
using testing::TempDir;

// A FileSystemWriter whose data files cannot be opened until the gate opens, so that a test
// can act while the background save is certainly still in flight.
class GatedWriter final : public StorageWriter {
 public:
  GatedWriter(std::string dir, std::shared_future<void> gate) : inner_(std::move(dir)), gate_(gate) {}
  void Begin(bool wait) override { inner_.Begin(wait); }
  void End() override { inner_.End(); }
  int FirstFreeFileIndex() override { return inner_.FirstFreeFileIndex(); }
  bool HasCommitted() override { return inner_.HasCommitted(); }
  std::vector<std::string> CommittedFiles() override { return inner_.CommittedFiles(); }
  std::unique_ptr<FileSink> Open(const std::string& name) override {
    gate_.wait();
    return inner_.Open(name);
  }
  CommitReport Commit(const std::string& md, const std::vector<std::string>& keep) override { return inner_.Commit(md, keep); }
  void Abort(const std::vector<std::string>& created) override { inner_.Abort(created); }
  std::string Describe() const override { return inner_.Describe(); }

 private:
  FileSystemWriter inner_;
  std::shared_future<void> gate_;
};

at::Tensor Loaded(const std::string& dir, const at::Tensor& like) {
  StateDict sd;
  sd.AddTensor("w", at::zeros_like(like));
  load(sd, dir);
  return sd.FindTensor("w")->chunks[0].tensor;
}

TEST(AsyncSave, CheckpointHoldsTheValuesAtSaveTimeNotLaterChanges) {
  TempDir dir;
  at::manual_seed(3);
  at::Tensor w = at::rand({64, 32});
  const at::Tensor before = w.clone();
  std::promise<void> open;
  AsyncSaver saver;
  StateDict sd;
  sd.AddSharded("w", w, Layout::Sharded(2, 1), 0);  // a non-contiguous view of w
  sd.AddSharded("w", w, Layout::Sharded(2, 1), 1);
  sd.AddBytes("note", "v1");
  PendingSave p = saver.Save(sd, std::make_unique<GatedWriter>(dir.path(), open.get_future().share()));
  EXPECT_FALSE(p.done());
  w.add_(1);  // training goes on
  open.set_value();
  const SaveStats st = p.wait();
  EXPECT_EQ(st.bytes_written, 64 * 32 * 4 + 2);
  EXPECT_TRUE(at::equal(Loaded(dir.path(), w), before));
  EXPECT_FALSE(at::equal(before, w));
}

TEST(AsyncSave, ErrorsComeBackThroughWaitAndThePreviousCheckpointSurvives) {
  TempDir dir;
  const at::Tensor v1 = at::arange(1024, at::kFloat);
  AsyncSaver saver;
  StateDict sd;
  sd.AddTensor("w", v1);
  saver.Save(sd, dir.path()).wait();
  StateDict sd2;
  sd2.AddTensor("w", v1 + 1);
  PendingSave p = saver.Save(sd2, std::make_unique<FullDiskWriter>(dir.path(), 100));
  try {
    p.wait();
    ADD_FAILURE() << "the failed save reported success";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("No space left on device"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(at::equal(Loaded(dir.path(), v1), v1));
}

TEST(AsyncSave, RefusesASecondSaveWhileOneIsInFlight) {
  TempDir dir;
  std::promise<void> open;
  AsyncSaver saver(AsyncSaver::WhenBusy::kRefuse);
  StateDict sd;
  sd.AddTensor("w", at::ones({8}));
  PendingSave first = saver.Save(sd, std::make_unique<GatedWriter>(dir / "a", open.get_future().share()));
  try {
    saver.Save(sd, dir / "b");
    ADD_FAILURE() << "a second save was accepted while one was in flight";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("still in flight"), std::string::npos) << e.what();
  }
  open.set_value();
  first.wait();
  saver.Save(sd, dir / "b").wait();  // accepted once the first is done
  EXPECT_TRUE(at::equal(Loaded(dir / "b", at::ones({8})), at::ones({8})));
}

TEST(AsyncSave, ASecondSaveWaitsForTheFirstAndTheyNeverInterleave) {
  TempDir dir;
  std::promise<void> open;
  AsyncSaver saver;  // WhenBusy::kWait
  StateDict one, two;
  one.AddTensor("w", at::full({256}, 1.0));
  two.AddTensor("w", at::full({256}, 2.0));
  PendingSave first = saver.Save(one, std::make_unique<GatedWriter>(dir.path(), open.get_future().share()));
  std::atomic<bool> second_returned{false};
  PendingSave second;
  std::thread t([&] {
    second = saver.Save(two, dir.path());
    second_returned = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(second_returned.load()) << "the second save started while the first was in flight";
  EXPECT_FALSE(first.done());
  open.set_value();
  t.join();
  first.wait();
  second.wait();
  EXPECT_TRUE(at::equal(Loaded(dir.path(), at::zeros({256})), at::full({256}, 2.0)));
}

TEST(AsyncSave, AcrossGlooRanks) {
  TempDir dir;
  at::manual_seed(4);
  const at::Tensor full = at::rand({10, 6});
  const auto errors = testing::RunRanks(2, [&](int rank, Comm& comm) {
    at::Tensor mine = full.narrow(0, 5 * rank, 5).clone();
    StateDict sd;
    sd.Add(TensorEntry{"w", at::kFloat, {10, 6}, {{BoxForRank({10, 6}, Layout::Sharded(2, 0), rank), mine}}});
    SaveOptions so;
    so.comm = &comm;
    AsyncSaver saver;
    PendingSave p = saver.Save(sd, dir.path(), so);
    mine.zero_();
    p.wait();
  });
  ASSERT_EQ(testing::Joined(errors), "");
  EXPECT_TRUE(at::equal(Loaded(dir.path(), full), full));
}

}  // namespace
}  // namespace dcpp
