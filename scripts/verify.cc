// Checks a checkpoint against its metadata without loading it: re-reads every chunk and blob
// and compares its XXH3-64 checksum (native dcpp), checks that each tensor's chunks cover it
// exactly (overlaps only with equal data), and reports every problem it finds. A PyTorch DCP
// checkpoint has no checksums in its metadata: the CRC-32 of every entry of every item's
// torch.save archive is checked instead, with each archive's zip structure (what PyTorch's
// reader needs, which no CRC-32 covers) and the globals each bytes item's pickle names (any
// outside torch.load(weights_only=True)'s safe list is a problem: dcp.load would run it).
// Safetensors files are read but have nothing to check. A native checkpoint whose metadata
// says checksum algorithm "none" gets the line "checksums: NONE — data is not verified".
//
//   bazel run //scripts:verify -- DIR [--threads N] [--quiet]
//
// Prints one line per problem on stderr (and notes, e.g. files the metadata does not name, on
// stdout), then "verified: N tensors, M chunks, B bytes, no problems" on stdout (exit 0) or
// "FAILED: K problems" on stderr (exit 1). --quiet prints only that last line. Exit 2: bad
// command line. (stdout is flushed before each line on stderr, so the two keep their order
// when they go to one place.)
#include <cstdio>
#include <filesystem>
#include <string>

#include "core/base/error.h"
#include "core/storage/dcp/dcp.h"
#include "core/storage/open.h"
#include "core/storage/torchsave/torchsave.h"
#include "core/tools/verify.h"
#include "scripts/cli.h"

namespace {

// One line about a problem: on stderr, after whatever stdout holds so far.
void PrintProblem(const std::string& line) {
  std::fflush(stdout);
  std::fprintf(stderr, "%s\n", line.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Verify every byte of a dcpp checkpoint against its metadata", "verify"};
  std::string dir;
  dcpp::VerifyOptions opt;
  bool quiet = false;
  app.add_option("DIR", dir, "checkpoint folder (holds .metadata)")->required();
  app.add_option("--threads", opt.thread_count, "reader threads")->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_flag("--quiet,-q", quiet, "print only the last line");
  return dcpp::cli::Run(app, argc, argv, [&] {
    const std::string path = dcpp::cli::UserPath(dir);
    DCPP_CHECK(std::filesystem::exists(path), "no checkpoint folder ", path);
    // Native folders also get notes on files the metadata does not name.
    const dcpp::Format format = dcpp::DetectFormat(path);
    dcpp::VerifyReport r;
    if (format == dcpp::Format::kNative) {
      r = dcpp::Verify(path, opt);
    } else {
      const auto reader = dcpp::OpenReader(path);
      dcpp::VerifyOwnChecksums(*reader, false);  // (CheckDcpArchives below checks every entry instead)
      r = dcpp::Verify(*reader, opt);
    }
    // PyTorch DCP records no checksums in its metadata, but torch.save records a CRC-32 of
    // every entry of every item's archive: those are checked instead, with the archives' zip
    // structure and the globals the bytes items' pickles name.
    dcpp::DcpArchiveCheck crc;
    const bool dcp = format == dcpp::Format::kDcp;
    // torch.save files (core/storage/torchsave): the CRC-32 of every zip entry of every file.
    const bool torchsave = std::string(format.name()) == "torchsave";
    if (dcp && r.ok()) {
      crc = dcpp::CheckDcpArchives(path);
    } else if (torchsave && r.ok()) {
      const dcpp::TorchSaveCrcCheck c = dcpp::CheckTorchSaveCrcs(path);
      crc.items = c.files;
      crc.entries = c.entries;
      crc.bytes = c.bytes;
      crc.problems = c.problems;
    } else if (dcp) {
      try {
        crc.problems = dcpp::UnsafeDcpObjects(path);
      } catch (const dcpp::Error&) {
        // the metadata itself is broken: that is already reported
      }
    }
    // Loud, even with --quiet: a native checkpoint without checksums was read, not verified.
    for (const auto& w : r.warnings) std::printf("%s\n", w.c_str());
    if (!quiet) {
      for (const auto& p : r.problems) PrintProblem(p.message);
      for (const auto& p : crc.problems) PrintProblem(p);
      if ((dcp || torchsave) && r.ok()) {
        std::printf("checked the CRC-32 of %lld archive entries in %lld %s (%s)\n",
                    static_cast<long long>(crc.entries), static_cast<long long>(crc.items),
                    dcp ? "DCP items" : "torch.save files",
                    dcpp::cli::HumanBytes(static_cast<double>(crc.bytes)).c_str());
      }
      if (r.problems_omitted > 0) {
        PrintProblem("... and " + std::to_string(r.problems_omitted) + " more problems");
      }
      for (const auto& n : r.notes) {
        // (DCP's CRC-32s were checked above instead of the missing checksums.)
        if (!((dcp || torchsave) && n.rfind("checksums are not available", 0) == 0)) std::printf("note: %s\n", n.c_str());
      }
      std::printf("checked %lld tensors, %lld chunks, %lld bytes entries, %lld overlaps; read %s\n",
                  static_cast<long long>(r.tensors), static_cast<long long>(r.chunks_checked),
                  static_cast<long long>(r.blobs_checked), static_cast<long long>(r.overlaps_compared),
                  dcpp::cli::HumanBytes(static_cast<double>(r.bytes_read)).c_str());
    }
    const int64_t problems = r.problem_count() + static_cast<int64_t>(crc.problems.size());
    if (problems > 0) {
      PrintProblem("FAILED: " + std::to_string(problems) + " problem" + (problems == 1 ? "" : "s"));
      return dcpp::cli::kFailed;
    }
    std::printf("verified: %lld tensors, %lld chunks, %lld bytes, no problems\n",
                static_cast<long long>(r.tensors), static_cast<long long>(r.chunks_checked),
                static_cast<long long>(r.bytes_read));
    return dcpp::cli::kOk;
  });
}
