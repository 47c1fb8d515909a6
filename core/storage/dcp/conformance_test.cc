// The storage conformance suite (core/storage/testing/conformance.h) for PyTorch DCP's format,
// with the CRC-32 of every item checked on load; and again with every item zstd-compressed.
#include "core/storage/dcp/dcp.h"
#include "core/storage/dcp/pickle.h"
#include "core/storage/dcp/torch_archive.h"
#include "core/storage/testing/conformance.h"

namespace dcpp::testing {
namespace {

const bool kRegistered = [] {
  ConformanceParams p("DcpConformance", Format::kDcp);
  p.save = [](const StateDict& sd, const std::string& dir) {
    SaveOptions opt;
    opt.format = Format::kDcp;
    save(sd, dir, opt);
  };
  p.writer = [](const std::string& dir, Env* env) -> std::unique_ptr<StorageWriter> {
    return std::make_unique<DcpWriter>(dir, env);
  };
  p.load.verify_dcp_crc32 = true;
  p.decode_bytes = [](const std::string& archive) {
    const pickle::ValuePtr v = torch_archive::DecodeObject(archive, "blob");
    return v->Is(pickle::Value::Kind::kBytes) ? v->str : "not a bytes object: " + pickle::Repr(*v);
  };
  RegisterStorageConformanceTests(p);

  // The same with every item zstd-compressed (DcpWriteOptions::zstd).
  ConformanceParams z = p;
  z.suite = "DcpZstdConformance";
  z.stores_plain = false;
  z.save = [](const StateDict& sd, const std::string& dir) {
    DcpWriteOptions o;
    o.zstd = true;
    save(sd, DcpWriter(dir, Env::Default(), o));
  };
  z.writer = [](const std::string& dir, Env* env) -> std::unique_ptr<StorageWriter> {
    DcpWriteOptions o;
    o.zstd = true;
    return std::make_unique<DcpWriter>(dir, env, o);
  };
  RegisterStorageConformanceTests(z);
  return true;
}();

}  // namespace
}  // namespace dcpp::testing
