// .npy: "\x93NUMPY", version, header length, a Python dict literal padded with spaces and
// a newline so the data starts at a multiple of 64 bytes, then the raw data.
#include "tools/lib/npy.h"

#include <sys/stat.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "tools/lib/atomic_file.h"

namespace trick {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;

bool host_is_little_endian() {
  const uint16_t one = 1;
  uint8_t b;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

// A parser for the header dict numpy writes: {'key': value, ...} with values a quoted
// string, True/False, or a tuple of non-negative integers.
class HeaderParser {
 public:
  HeaderParser(const std::string& s, const std::string& name) : s_(s), name_(name) {}

  void parse(std::string* descr, bool* fortran, std::vector<int64_t>* shape) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    expect('{');
    while (true) {
      skip();
      if (peek() == '}') break;
      const std::string key = quoted();
      expect(':');
      if (key == "descr") {
        *descr = quoted();
        have_descr = true;
      } else if (key == "fortran_order") {
        *fortran = boolean();
        have_fortran = true;
      } else if (key == "shape") {
        *shape = tuple();
        have_shape = true;
      } else {
        bad("unknown key '" + key + "'");
      }
      skip();
      if (peek() == ',') ++i_;
    }
    TRICK_CHECK(have_descr && have_fortran && have_shape, name_,
                ": .npy header lacks one of 'descr', 'fortran_order', 'shape'");
  }

 private:
  const std::string& s_;
  const std::string& name_;
  size_t i_ = 0;

  [[noreturn]] void bad(const std::string& what) const {
    fail(name_, ": malformed .npy header (", what, " at offset ", i_, "): ", s_);
  }
  void skip() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  char peek() {
    if (i_ >= s_.size()) bad("unexpected end");
    return s_[i_];
  }
  void expect(char c) {
    skip();
    if (peek() != c) bad(std::string("expected '") + c + "'");
    ++i_;
  }
  std::string quoted() {
    skip();
    const char q = peek();
    if (q != '\'' && q != '"') bad("expected a quoted string");
    const size_t end = s_.find(q, i_ + 1);
    if (end == std::string::npos) bad("unterminated string");
    std::string v = s_.substr(i_ + 1, end - i_ - 1);
    i_ = end + 1;
    return v;
  }
  bool boolean() {
    skip();
    if (s_.compare(i_, 4, "True") == 0) return i_ += 4, true;
    if (s_.compare(i_, 5, "False") == 0) return i_ += 5, false;
    bad("expected True or False");
  }
  std::vector<int64_t> tuple() {
    std::vector<int64_t> dims;
    expect('(');
    while (true) {
      skip();
      if (peek() == ')') break;
      if (!std::isdigit(static_cast<unsigned char>(peek()))) bad("expected a dimension");
      int64_t v = 0;
      while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) {
        v = v * 10 + (s_[i_++] - '0');
        if (v > (int64_t(1) << 40)) bad("dimension too large");
      }
      dims.push_back(v);
      skip();
      if (peek() == ',') ++i_;
    }
    ++i_;
    return dims;
  }
};

}  // namespace

std::string encode_npy(const Tensor& t) {
  TRICK_CHECK(t.defined(), "npy: undefined tensor");
  TRICK_CHECK(host_is_little_endian(), "npy: big-endian hosts are not supported");
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  for (int i = 0; i < t.ndim(); ++i) dict += std::to_string(t.dim(i)) + (t.ndim() == 1 || i + 1 < t.ndim() ? ", " : "");
  if (t.ndim() == 1) dict.pop_back();  // "(5,)"
  dict += "), }";
  // Pad with spaces so magic + version + length + dict + '\n' is a multiple of 64.
  const size_t unpadded = kMagicLen + 2 + 2 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict += '\n';
  const uint16_t header_len = static_cast<uint16_t>(dict.size());
  std::string out(kMagic, kMagicLen);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header_len & 0xff);
  out += static_cast<char>(header_len >> 8);
  out += dict;
  const std::vector<float> v = t.to_vector();
  out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
  return out;
}

void save_npy(const std::string& path, const Tensor& t) {
  std::string bytes;
  try {
    bytes = encode_npy(t);
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  atomic_write(path, bytes);
}

Tensor decode_npy(const std::string& b, const std::string& name) {
  TRICK_CHECK(host_is_little_endian(), name, ": big-endian hosts are not supported");
  TRICK_CHECK(b.size() >= 10 && b.compare(0, kMagicLen, kMagic, kMagicLen) == 0, name, ": not a .npy file");
  const int major = static_cast<uint8_t>(b[6]);
  size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = static_cast<uint8_t>(b[8]) | (size_t(static_cast<uint8_t>(b[9])) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    TRICK_CHECK(b.size() >= 12, name, ": truncated .npy header");
    for (int i = 0; i < 4; ++i) header_len |= size_t(static_cast<uint8_t>(b[8 + i])) << (8 * i);
    offset = 12;
  } else {
    fail(name, ": .npy format version ", major, " is not supported");
  }
  TRICK_CHECK(header_len <= b.size() - offset, name, ": truncated .npy header");
  const std::string header = b.substr(offset, header_len);
  std::string descr;
  bool fortran = false;
  std::vector<int64_t> dims;
  HeaderParser(header, name).parse(&descr, &fortran, &dims);
  TRICK_CHECK(descr == "<f4", name, ": dtype '", descr, "' is not supported (need little-endian float32, '<f4')");
  TRICK_CHECK(!fortran, name, ": Fortran-order arrays are not supported");
  TRICK_CHECK(dims.size() <= static_cast<size_t>(kMaxDims), name, ": ", dims.size(), "-D array, at most ", kMaxDims,
              " dims supported");
  if (dims.empty()) dims.push_back(1);
  int64_t numel = 1;
  for (int64_t d : dims) {
    TRICK_CHECK(d == 0 || numel <= (int64_t(1) << 40) / d, name, ": array too large");
    numel *= d;
  }
  const size_t data_bytes = b.size() - offset - header_len;
  TRICK_CHECK(data_bytes == static_cast<size_t>(numel) * sizeof(float), name, ": has ", data_bytes,
              " bytes of data, its shape needs ", numel * int64_t(sizeof(float)));
  Tensor t = Tensor::empty(Shape::from(dims));
  if (numel) std::memcpy(t.data(), b.data() + offset + header_len, data_bytes);
  return t;
}

Tensor load_npy(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) fail(path, ": ", errno == ENOENT ? "no such file" : std::strerror(errno));
  TRICK_CHECK(S_ISREG(st.st_mode), path, ": not a regular file");
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open (", std::strerror(errno), ")");
  std::ostringstream ss;
  ss << f.rdbuf();
  TRICK_CHECK(!f.bad(), path, ": read error");
  return decode_npy(ss.str(), path);
}

}  // namespace trick
