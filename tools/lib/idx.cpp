#include "tools/lib/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sys/stat.h>
#include <vector>

namespace trick {

namespace {

// A gzip or plain file read through zlib (gzread passes plain files through unchanged), with
// errors that name the file.
class GzReader {
 public:
  explicit GzReader(const std::string& path) : path_(path) {
    struct stat st;
    TRICK_CHECK(::stat(path.c_str(), &st) == 0, path, ": cannot open: ", std::strerror(errno));
    TRICK_CHECK(S_ISREG(st.st_mode), path, ": not a regular file");
    errno = 0;
    f_ = gzopen(path.c_str(), "rb");
    TRICK_CHECK(f_ != nullptr, path, ": cannot open: ", errno ? std::strerror(errno) : "out of memory");
    gzbuffer(f_, 1 << 17);
  }
  ~GzReader() {
    if (f_) gzclose_r(f_);
  }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;

  // Reads up to n bytes into dst; returns how many arrived (fewer only at the end of the data).
  // Damaged compressed data is an error, not a short read.
  size_t read(void* dst, size_t n) {
    size_t got = 0;
    while (got < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - got, size_t{1} << 24));
      const int r = gzread(f_, static_cast<char*>(dst) + got, chunk);
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    check();
    return got;
  }
  bool compressed() { return gzdirect(f_) == 0; }

 private:
  void check() {
    int err = Z_OK;
    std::string msg = gzerror(f_, &err);
    if (err == Z_OK || err == Z_STREAM_END) return;
    if (msg.compare(0, path_.size() + 2, path_ + ": ") == 0) msg.erase(0, path_.size() + 2);  // zlib adds the path
    if (err == Z_BUF_ERROR)
      fail(path_, ": truncated gzip data (the compressed stream ends early: ", msg, ")");
    fail(path_, ": corrupt gzip data (", msg, ")");
  }
  std::string path_;
  gzFile f_ = nullptr;
};

uint32_t be32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// Reads the header (magic, dims) and the data of an IDX file whose magic must be `magic`.
std::vector<unsigned char> read_idx(const std::string& path, uint32_t magic, const char* what,
                                    std::vector<uint32_t>* dims) {
  GzReader in(path);
  unsigned char head[4];
  const size_t got = in.read(head, 4);
  TRICK_CHECK(got > 0, path, ": empty file (expected an IDX ", what, " file)");
  TRICK_CHECK(got == 4, path, ": file ends inside the IDX magic number (", got, " bytes)");
  const uint32_t m = be32(head);
  TRICK_CHECK(m == magic, path, ": bad magic number ", hex32(m), ", expected ", hex32(magic), " for IDX ", what,
              (m >> 8) == 0x08 ? " (an IDX file of another kind?)"
                               : (in.compressed() ? "" : " (not an IDX file, and not gzip-compressed either)"));
  const int ndim = static_cast<int>(magic & 0xff);
  dims->assign(static_cast<size_t>(ndim), 0);
  std::vector<unsigned char> dim_bytes(static_cast<size_t>(4 * ndim));
  TRICK_CHECK(in.read(dim_bytes.data(), dim_bytes.size()) == dim_bytes.size(), path,
              ": file ends inside the IDX header (", ndim, " dimensions expected)");
  std::string shape;
  uint64_t total = 1;
  bool overflow = false;
  for (int i = 0; i < ndim; ++i) {
    (*dims)[i] = be32(&dim_bytes[4 * i]);
    shape += cat(i ? " x " : "", (*dims)[i]);
    TRICK_CHECK(i == 0 || (*dims)[i] > 0, path, ": dimension ", i, " of the IDX header is 0");
    overflow = overflow || __builtin_mul_overflow(total, uint64_t{(*dims)[i]}, &total);
  }
  TRICK_CHECK(!overflow && total <= static_cast<uint64_t>(kMaxIdxBytes), path, ": the header declares ", shape,
              " bytes of ", what, ", more than the ", kMaxIdxBytes >> 30, " GiB this reader accepts (not an IDX file?)");
  // Read in chunks as the data arrives, so a header that lies about the size costs no memory.
  std::vector<unsigned char> data;
  const size_t want = static_cast<size_t>(total);
  size_t have = 0;
  while (have < want) {
    const size_t step = std::min<size_t>(want - have, size_t{1} << 22);
    data.resize(have + step);
    const size_t r = in.read(data.data() + have, step);
    have += r;
    if (r < step) break;
  }
  data.resize(have);
  TRICK_CHECK(have == want, path, ": short data: the header declares ", shape, " = ", want, " bytes of ", what,
              ", the file has only ", have);
  unsigned char extra;
  TRICK_CHECK(in.read(&extra, 1) == 0, path, ": unexpected bytes after the ", want, " bytes of ", what,
              " the header declares (", shape, ")");
  return data;
}

}  // namespace

Tensor read_idx_images(const std::string& path) {
  std::vector<uint32_t> dims;
  const std::vector<unsigned char> data = read_idx(path, 0x00000803, "images", &dims);
  const int64_t n = dims[0], h = dims[1], w = dims[2];
  TRICK_CHECK(h <= 65536 && w <= 65536, path, ": images of ", h, " x ", w, " pixels are implausibly large");
  Tensor out = Tensor::empty(Shape{n, h, w, 1});
  float* p = out.data();
  for (size_t i = 0; i < data.size(); ++i) p[i] = static_cast<float>(data[i]) / 255.f;
  return out;
}

Tensor read_idx_labels(const std::string& path, int classes) {
  std::vector<uint32_t> dims;
  const std::vector<unsigned char> data = read_idx(path, 0x00000801, "labels", &dims);
  Tensor out = Tensor::empty(Shape{static_cast<int64_t>(dims[0])});
  float* p = out.data();
  for (size_t i = 0; i < data.size(); ++i) {
    TRICK_CHECK(data[i] < classes, path, ": label ", int{data[i]}, " of item ", i, " is outside 0..", classes - 1);
    p[i] = static_cast<float>(data[i]);
  }
  return out;
}

IdxDataset read_idx_pair(const std::string& images_path, const std::string& labels_path, int classes) {
  IdxDataset d;
  d.images = read_idx_images(images_path);
  d.labels = read_idx_labels(labels_path, classes);
  TRICK_CHECK(d.images.dim(0) == d.labels.dim(0), images_path, " has ", d.images.dim(0), " images but ", labels_path,
              " has ", d.labels.dim(0), " labels");
  return d;
}

IdxDataset read_fashion_mnist(const std::string& dir, const std::string& split) {
  TRICK_CHECK(split == "train" || split == "test", "fashion-mnist: split must be 'train' or 'test', got '", split,
              "'");
  {  // a missing folder: most likely the default one without Debian's package
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0)
      fail(dir, ": no such folder (", dir == kFashionMnistDir ? "Debian's package dataset-fashion-mnist installs "
           "Fashion-MNIST's IDX files there" : "give --data the folder of Fashion-MNIST's IDX files", ")");
  }
  const std::string stem = dir + "/" + (split == "train" ? "train" : "t10k");
  auto pick = [](const std::string& base) {
    struct stat st;
    if (::stat((base + ".gz").c_str(), &st) != 0 && ::stat(base.c_str(), &st) == 0) return base;
    return base + ".gz";  // the error, if any, names the packaged name
  };
  IdxDataset d = read_idx_pair(pick(stem + "-images-idx3-ubyte"), pick(stem + "-labels-idx1-ubyte"), 10);
  TRICK_CHECK(d.images.dim(1) == 28 && d.images.dim(2) == 28, pick(stem + "-images-idx3-ubyte"), ": images are ",
              d.images.dim(1), "x", d.images.dim(2), ", Fashion-MNIST's are 28x28");
  return d;
}

}  // namespace trick
