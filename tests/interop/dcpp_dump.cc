// dcpp_dump SRC OUT: every entry of the checkpoint at SRC (any format dcpp reads: native,
// PyTorch DCP, safetensors), loaded whole through dcpp::load and written for Python to check:
//
//   OUT/<fqn>.pt     a tensor, as torch.save writes it (torch.load reads it back)
//   OUT/<fqn>.bytes  a bytes entry, raw (for a DCP checkpoint: the torch.save'd object)
//
// Prints "dumped N tensors, M bytes entries" on success; exits 1 with the dcpp::Error on
// stderr otherwise (the interop tests check the messages of bad checkpoints through it).
#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/dcpp.h"
#include "core/format/metadata.h"
#include "core/model/dtype.h"
#include "core/storage/dcp/torch_archive.h"
#include "core/storage/open.h"

namespace {

void WriteFile(const std::string& path, const std::string& a, const void* data, size_t n,
               const std::string& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(a.data(), static_cast<std::streamsize>(a.size()));
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
  f.write(b.data(), static_cast<std::streamsize>(b.size()));
  DCPP_CHECK(f.good(), "cannot write ", path);
}

int Dump(const std::string& src, const std::string& out) {
  auto reader = dcpp::OpenReader(src);
  const dcpp::proto::Metadata md = dcpp::ParseMetadata(reader->ReadMetadata(), src);

  dcpp::StateDict sd;
  for (const auto& t : md.tensors()) {
    const std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
    sd.AddUnallocated(t.fqn(), dcpp::DtypeFromName(t.dtype()), shape, dcpp::Layout::Replicated(1), 0);
  }
  for (const auto& b : md.bytes()) sd.AddBytes(b.fqn(), "");
  dcpp::load(sd, *reader);
  std::filesystem::create_directories(out);

  for (const dcpp::TensorEntry& e : sd.tensors()) {
    const at::Tensor t = e.chunks.at(0).tensor.contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(t.numel() * t.element_size());
    const dcpp::torch_archive::TensorArchive archive(dcpp::DtypeName(e.dtype), e.shape, nbytes);
    const uint32_t crc = dcpp::torch_archive::Crc32(t.data_ptr(), nbytes);
    WriteFile(out + "/" + e.fqn + ".pt", archive.prefix(), t.data_ptr(), nbytes, archive.suffix(crc));
  }
  for (const dcpp::BytesEntry& b : sd.bytes()) {
    WriteFile(out + "/" + b.fqn + ".bytes", "", b.data.data(), b.data.size(), "");
  }
  std::printf("dumped %zu tensors, %zu bytes entries\n", sd.tensors().size(), sd.bytes().size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: dcpp_dump SRC OUT\n");
    return 2;
  }
  try {
    return Dump(argv[1], argv[2]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dcpp_dump: error: %s\n", dcpp::ErrorMessage(e).c_str());
    return 1;
  }
}
