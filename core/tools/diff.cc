#include "core/tools/diff.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <numeric>
#include <set>

#include "core/base/error.h"
#include "core/engine/band_reader.h"
#include "core/format/metadata.h"
#include "core/model/dtype.h"
#include "core/storage/native/filesystem.h"

namespace dcpp {
namespace {

// Elements compared at once: byte-equal slices are skipped with memcmp; only a slice that
// differs goes through ATen, whose temporaries stay this small whatever the band size.
constexpr int64_t kSliceElems = 1 << 16;

std::string ListText(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// The row-major multi-index of element `linear` of a tensor of `shape`.
std::string IndexText(int64_t linear, const std::vector<int64_t>& shape) {
  std::vector<int64_t> index(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    index[d] = linear % shape[d];
    linear /= shape[d];
  }
  return ListText(index);
}

std::vector<int64_t> ShapeOf(const proto::TensorMeta& t) { return {t.shape().begin(), t.shape().end()}; }

// Counts the elements that differ, band after band, and where the first one is.
class ValueComparer {
 public:
  ValueComparer(c10::ScalarType dtype, double atol)
      : dtype_(dtype),
        elem_size_(ElementSize(dtype)),
        complex_(c10::isComplexType(dtype)),
        // float4_e2m1fn_x2 (two values a byte) and the bits dtypes have no conversion to
        // double: they compare bit for bit only.
        numeric_(dtype != at::kFloat4_e2m1fn_x2 && !c10::isBitsType(dtype)),
        tolerant_(numeric_ && atol > 0 && (c10::isFloatingType(dtype) || c10::isComplexType(dtype))),
        atol_(atol) {}

  // Compares `n` elements at `a` and `b`, which are elements [first, first + n) of the tensor.
  void Compare(const uint8_t* a, const uint8_t* b, int64_t first, int64_t n) {
    for (int64_t i = 0; i < n; i += kSliceElems) {
      const int64_t m = std::min(kSliceElems, n - i);
      const int64_t off = i * elem_size_;
      if (std::memcmp(a + off, b + off, static_cast<size_t>(m * elem_size_)) == 0) continue;
      CompareSlice(a + off, b + off, first + i, m);
    }
  }

  int64_t mismatched() const { return mismatched_; }
  int64_t first() const { return first_; }
  double max_abs_diff() const { return max_abs_; }

 private:
  at::Tensor View(const uint8_t* p, std::vector<int64_t> sizes, c10::ScalarType t) const {
    return at::from_blob(const_cast<uint8_t*>(p), sizes, at::TensorOptions().dtype(t));
  }

  void CompareSlice(const uint8_t* a, const uint8_t* b, int64_t first, int64_t n) {
    // Bitwise: any byte of the element differs.
    at::Tensor differ = View(a, {n, elem_size_}, at::kByte).ne(View(b, {n, elem_size_}, at::kByte)).any(1);
    if (numeric_) {
      const c10::ScalarType wide = complex_ ? at::kComplexDouble : at::kDouble;
      const at::Tensor wa = View(a, {n}, dtype_).to(wide), wb = View(b, {n}, dtype_).to(wide);
      if (tolerant_) differ.logical_and_(at::isclose(wa, wb, /*rtol=*/0, atol_, /*equal_nan=*/true).logical_not());
      const at::Tensor finite = at::isfinite(wa).logical_and_(at::isfinite(wb));
      const at::Tensor abs = (wa - wb).abs().masked_fill_(finite.logical_not(), 0);
      max_abs_ = std::max(max_abs_, abs.max().item<double>());
    }
    const int64_t count = differ.sum().item<int64_t>();
    if (count > 0 && first_ < 0) first_ = first + differ.to(at::kByte).argmax().item<int64_t>();
    mismatched_ += count;
  }

  c10::ScalarType dtype_;
  int64_t elem_size_;
  bool complex_, numeric_, tolerant_;
  double atol_;
  int64_t mismatched_ = 0, first_ = -1;
  double max_abs_ = 0;
};

// A growable buffer for bands, reused across keys.
class BandBuffer {
 public:
  uint8_t* Get(int64_t bytes) {
    if (bytes > capacity_) {
      data_.reset(new uint8_t[static_cast<size_t>(bytes)]);
      capacity_ = bytes;
    }
    return data_.get();
  }

 private:
  std::unique_ptr<uint8_t[]> data_;
  int64_t capacity_ = 0;
};

class Differ {
 public:
  Differ(StorageReader& a, StorageReader& b, const DiffOptions& opt) : files_a_(a), files_b_(b), opt_(opt) {}

  // Streams `ta` and `tb` (same dtype and shape) in the same bands; fills `out`'s counts.
  // Returns the bytes compared.
  int64_t CompareValues(const proto::TensorMeta& ta, const proto::TensorMeta& tb, KeyDiff* out) {
    const c10::ScalarType dtype = DtypeFromName(ta.dtype());
    const int64_t es = ElementSize(dtype);
    BandReader ra(files_a_, ta, opt_.verify_checksums), rb(files_b_, tb, opt_.verify_checksums);
    if (ra.rows() == 0 || ra.row_bytes() == 0) return 0;
    // Rows are of the byte shape: a 0-d or 1-d tensor's rows are single bytes, so a band
    // starts on an element only every `unit` rows.
    const int64_t unit = es / std::gcd(ra.row_bytes(), es);
    const int64_t per_row = 2 * ra.row_bytes() + std::max(ra.staging_bytes_per_row(), rb.staging_bytes_per_row());
    DCPP_CHECK(unit * per_row <= opt_.memory_budget, "key '", ta.fqn(), "': one ",
               unit > 1 ? "element" : "row of dimension 0", " needs ", unit * per_row,
               " bytes of buffers for both sides, more than the memory budget (", opt_.memory_budget,
               " bytes); raise the memory budget");
    const int64_t band_rows = std::min(ra.rows(), opt_.memory_budget / per_row / unit * unit);
    uint8_t* band_a = buffer_.Get(band_rows * per_row);
    uint8_t* band_b = band_a + band_rows * ra.row_bytes();
    uint8_t* staging = band_b + band_rows * ra.row_bytes();

    ValueComparer cmp(dtype, opt_.atol);
    for (int64_t row = 0; row < ra.rows(); row += band_rows) {
      const int64_t end = std::min(ra.rows(), row + band_rows);
      ra.Read(row, end, band_a, staging);
      rb.Read(row, end, band_b, staging);
      cmp.Compare(band_a, band_b, row * ra.row_bytes() / es, (end - row) * ra.row_bytes() / es);
    }
    if (opt_.verify_checksums) {
      DCPP_CHECK(ra.unverified_chunks() == 0 && rb.unverified_chunks() == 0, "key '", ta.fqn(),
                 "': some chunks were not verified");
    }
    out->numel = ra.rows() * ra.row_bytes() / es;
    out->mismatched = cmp.mismatched();
    out->max_abs_diff = cmp.max_abs_diff();
    if (cmp.first() >= 0) out->first_index = IndexText(cmp.first(), ShapeOf(ta));
    return ra.rows() * ra.row_bytes();
  }

 private:
  SourceFiles files_a_, files_b_;
  const DiffOptions& opt_;
  BandBuffer buffer_;
};

struct Entries {
  std::map<std::string, const proto::TensorMeta*> tensors;
  std::map<std::string, const proto::BytesMeta*> blobs;

  explicit Entries(const proto::Metadata& md) {
    for (const auto& t : md.tensors()) tensors[t.fqn()] = &t;
    for (const auto& b : md.bytes()) blobs[b.fqn()] = &b;
  }
  template <typename T>
  static const T* Find(const std::map<std::string, const T*>& m, const std::string& key) {
    auto it = m.find(key);
    return it == m.end() ? nullptr : it->second;
  }
};

std::string KindText(const proto::TensorMeta* t) { return t ? "tensor (" + t->dtype() + ")" : "bytes entry"; }

// Compares a key present on both sides (as a tensor `t*` or a blob `b*`); returns true if it
// differs, with `d` filled in.
bool CompareKey(Differ& differ, const proto::TensorMeta* ta,
                const proto::TensorMeta* tb, const proto::BytesMeta* ba, const proto::BytesMeta* bb,
                DiffReport* report, KeyDiff* d) {
  if ((ta == nullptr) != (tb == nullptr)) {
    d->kind = "dtype";
    d->detail = KindText(ta) + " vs " + KindText(tb);
    return true;
  }
  if (ta) {
    if (ta->dtype() != tb->dtype()) {
      d->kind = "dtype";
      d->detail = ta->dtype() + " vs " + tb->dtype();
      return true;
    }
    if (ShapeOf(*ta) != ShapeOf(*tb)) {
      d->kind = "shape";
      d->detail = ListText(ShapeOf(*ta)) + " vs " + ListText(ShapeOf(*tb));
      return true;
    }
    d->kind = "values";
    report->bytes_compared += differ.CompareValues(*ta, *tb, d);
    return d->mismatched > 0;
  }
  d->kind = "bytes";
  if (ba->length() != bb->length()) {
    d->detail = StrCat("length ", ba->length(), " vs ", bb->length(), " bytes");
    return true;
  }
  report->bytes_compared += differ.CompareValues(BlobAsTensor(*ba), BlobAsTensor(*bb), d);
  if (d->mismatched > 0) d->detail = "contents differ";
  return d->mismatched > 0;
}

}  // namespace

DiffReport Diff(StorageReader& a, StorageReader& b, const DiffOptions& opt) {
  DCPP_CHECK(opt.atol >= 0 && std::isfinite(opt.atol), "diff: atol must be a finite number >= 0 (got ",
             opt.atol, ")");
  DCPP_CHECK(opt.memory_budget > 0, "diff: the memory budget must be positive (got ",
             opt.memory_budget, ")");
  VerifyOwnChecksums(a, opt.verify_checksums);  // (DCP: each item's CRC-32)
  VerifyOwnChecksums(b, opt.verify_checksums);
  const proto::Metadata md_a = ParseMetadata(a.ReadMetadata(), a.Describe());
  const proto::Metadata md_b = ParseMetadata(b.ReadMetadata(), b.Describe());
  RefuseUncheckedNative(a, md_a, opt.verify_checksums, "diff");
  RefuseUncheckedNative(b, md_b, opt.verify_checksums, "diff");
  const Entries ea(md_a), eb(md_b);
  std::set<std::string> keys;
  for (const Entries* e : {&ea, &eb}) {
    for (const auto& kv : e->tensors) keys.insert(kv.first);
    for (const auto& kv : e->blobs) keys.insert(kv.first);
  }

  DiffReport report;
  DiffOptions read_opt = opt;  // a side without checksums (DCP, safetensors) is read unverified
  read_opt.verify_checksums = opt.verify_checksums && HasChecksums(md_a) && HasChecksums(md_b);
  Differ differ(a, b, read_opt);
  for (const std::string& key : keys) {
    const proto::TensorMeta *ta = Entries::Find(ea.tensors, key), *tb = Entries::Find(eb.tensors, key);
    const proto::BytesMeta *ba = Entries::Find(ea.blobs, key), *bb = Entries::Find(eb.blobs, key);
    KeyDiff d;
    d.key = key;
    if ((!ta && !ba) || (!tb && !bb)) {
      d.kind = !ta && !ba ? "only in B" : "only in A";
      report.differences.push_back(std::move(d));
      continue;
    }
    ++report.keys_compared;
    try {
      if (CompareKey(differ, ta, tb, ba, bb, &report, &d)) report.differences.push_back(std::move(d));
    } catch (const Error& e) {
      const std::string m = e.what();
      if (m.find("'" + key + "'") != std::string::npos) throw;
      throw Error(StrCat("key '", key, "': ", m));
    } catch (const std::exception& e) {
      throw Error(StrCat("key '", key, "': ", ErrorMessage(e)));
    }
  }
  return report;
}

DiffReport Diff(const std::string& a_dir, const std::string& b_dir, const DiffOptions& opt) {
  FileSystemReader a(a_dir), b(b_dir);
  return Diff(a, b, opt);
}

std::string DescribeDifference(const KeyDiff& d) {
  if (d.kind == "only in A" || d.kind == "only in B") return d.kind + ": " + d.key;
  if (d.kind == "values") {
    char max[32];
    std::snprintf(max, sizeof(max), "%g", d.max_abs_diff);
    return StrCat(d.key, ": ", d.mismatched, " of ", d.numel, " element", d.numel == 1 ? "" : "s",
                  d.mismatched == 1 ? " differs" : " differ", " (max |a-b| ", max, ", first at ",
                  d.first_index, ")");
  }
  if (d.kind == "bytes" && d.mismatched > 0) {
    return StrCat(d.key, ": bytes entry: ", d.mismatched, " of ", d.numel, " bytes differ (first at byte ",
                  d.first_index.substr(1, d.first_index.size() - 2), ")");
  }
  if (d.kind == "bytes") return StrCat(d.key, ": bytes entry ", d.detail);
  return StrCat(d.key, ": ", d.kind, " ", d.detail);
}

}  // namespace dcpp
