// Image decoding and PNG encoding with stb. This file holds the one implementation of
// stb_image and stb_image_write in the library.
#include "tools/lib/image.h"

#include <sys/stat.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "tools/lib/atomic_file.h"

#define STB_IMAGE_IMPLEMENTATION
// Only the formats photos come in: less decoder code exposed to untrusted files, and no
// TGA, whose header has no signature, so random bytes are never taken for an image.
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_GIF
#define STBI_ONLY_BMP
#define STB_IMAGE_WRITE_IMPLEMENTATION
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <stb_image.h>
#include <stb_image_write.h>
#pragma GCC diagnostic pop

namespace trick {

namespace {

// The format a file claims by its first bytes, for error messages.
const char* sniff_format(const std::string& b) {
  auto starts = [&](const char* magic, size_t n) { return b.size() >= n && std::memcmp(b.data(), magic, n) == 0; };
  if (starts("\x89PNG\r\n\x1a\n", 8)) return "PNG";
  if (starts("\xff\xd8\xff", 3)) return "JPEG";
  if (starts("GIF8", 4)) return "GIF";
  if (starts("BM", 2)) return "BMP";
  if (starts("RIFF", 4) && b.size() >= 12 && b.compare(8, 4, "WEBP") == 0) return "WebP";
  if (starts("II*\0", 4) || starts("MM\0*", 4)) return "TIFF";
  return nullptr;
}

// stb keeps the reason of its last failure in a global that nothing resets, and some
// failures set none: clear it before each call. Within one call, stb first tries the
// formats before the right one, whose signature checks leave their own reasons ("bad png
// sig" when a JPEG then fails silently); such a reason from another format is dropped.
void clear_stb_failure() { stbi__g_failure_reason = nullptr; }
std::string stb_reason(const char* format) {
  static const struct {
    const char* reason;
    const char* format;
  } kSignatureFailures[] = {{"bad png sig", "PNG"}, {"not BMP", "BMP"}, {"not GIF", "GIF"}};
  const char* r = stbi_failure_reason();
  if (!r || !*r) return "stb gave no reason";
  for (const auto& f : kSignatureFailures)
    if (std::strcmp(r, f.reason) == 0 && !(format && std::strcmp(format, f.format) == 0))
      return "stb gave no reason";
  return cat("stb: ", r);
}

uint32_t be16(const std::string& b, size_t i) { return (uint8_t(b[i]) << 8) | uint8_t(b[i + 1]); }
uint32_t be32(const std::string& b, size_t i) { return (be16(b, i) << 16) | be16(b, i + 2); }
uint32_t le16(const std::string& b, size_t i) { return uint8_t(b[i]) | (uint8_t(b[i + 1]) << 8); }

// The size the header of a PNG, JPEG, GIF or BMP declares, read without stb: stb's own
// header check fails on sizes it cannot allocate and then reports no size at all, so a
// huge declared size would read as "corrupt" instead of "too large". False if unknown.
bool declared_size(const std::string& b, const char* format, int64_t* w, int64_t* h) {
  if (!format) return false;
  const std::string f = format;
  if (f == "PNG" && b.size() >= 24 && b.compare(12, 4, "IHDR") == 0) {
    *w = be32(b, 16), *h = be32(b, 20);
    return true;
  }
  if (f == "GIF" && b.size() >= 10) {
    *w = le16(b, 6), *h = le16(b, 8);
    return true;
  }
  if (f == "BMP" && b.size() >= 26) {
    int32_t bw, bh;
    std::memcpy(&bw, b.data() + 18, 4);
    std::memcpy(&bh, b.data() + 22, 4);
    *w = bw < 0 ? -int64_t(bw) : bw, *h = bh < 0 ? -int64_t(bh) : bh;  // negative height: top-down
    return true;
  }
  if (f == "JPEG") {  // walk the marker segments to the first SOFn
    size_t i = 2;
    while (i + 4 <= b.size()) {
      if (uint8_t(b[i]) != 0xff) return false;
      const uint8_t m = uint8_t(b[i + 1]);
      if (m == 0xff) {  // fill byte
        ++i;
        continue;
      }
      if (m == 0xd8 || m == 0x01 || (m >= 0xd0 && m <= 0xd7)) {  // markers without a length
        i += 2;
        continue;
      }
      if (m == 0xda || m == 0xd9) return false;  // scan data or end before any frame header
      const size_t len = be16(b, i + 2);
      if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) {
        if (i + 9 > b.size()) return false;
        *h = be16(b, i + 5), *w = be16(b, i + 7);
        return true;
      }
      i += 2 + len;
    }
  }
  return false;
}

// stb_image 2.27 (Debian's libstb-dev) writes past its Huffman arrays when a DHT segment
// declares more than 256 codes (fixed upstream in 2.28). Walk the JPEG's segments, skipping
// entropy-coded data, and reject such tables before stb sees them. Returns "" if the
// tables are sane (other damage is left to stb), else what is wrong.
std::string check_jpeg_huffman_tables(const std::string& b) {
  size_t i = 2;  // after SOI
  while (i + 1 < b.size()) {
    if (uint8_t(b[i]) != 0xff) {  // entropy-coded data: skip to the next real marker
      ++i;
      continue;
    }
    const uint8_t m = uint8_t(b[i + 1]);
    if (m == 0xff) {  // fill byte
      ++i;
      continue;
    }
    if (m == 0x00 || m == 0x01 || (m >= 0xd0 && m <= 0xd8)) {  // stuffed zero, TEM, RSTn, SOI
      i += 2;
      continue;
    }
    if (m == 0xd9) return "";  // EOI
    if (i + 4 > b.size()) return "";
    const size_t len = be16(b, i + 2);
    if (len < 2) return "segment length below 2";
    if (m == 0xc4) {  // DHT: tables of (class/id, 16 counts, values)
      size_t p = i + 4;
      const size_t end = std::min(b.size(), i + 2 + len);
      while (p < end) {
        if (p + 17 > end) return end < i + 2 + len ? "the file ends inside a Huffman table" : "short Huffman table";
        size_t codes = 0;
        for (int k = 1; k <= 16; ++k) codes += uint8_t(b[p + k]);
        if (codes > 256) return "Huffman table with more than 256 codes";
        p += 17 + codes;
      }
    }
    i += 2 + len;
  }
  return "";
}

// PIL's RGB -> L (Convert.c, L24): ITU-R 601-2 luma in 16-bit fixed point, rounded.
uint8_t pil_luma(const uint8_t* rgb) {
  return static_cast<uint8_t>((rgb[0] * 19595u + rgb[1] * 38470u + rgb[2] * 7471u + 0x8000u) >> 16);
}

struct StbPixels {
  stbi_uc* p = nullptr;
  ~StbPixels() { stbi_image_free(p); }
};

}  // namespace

Tensor decode_image(const std::string& file_bytes, const std::string& name, int channels) {
  TRICK_CHECK(channels == 1 || channels == 3, name, ": images load with 1 or 3 channels, not ", channels);
  TRICK_CHECK(!file_bytes.empty(), name, ": the file is empty (0 bytes), not an image");
  // stb takes any run of 0xFF fill bytes before a JPEG's SOI marker (FF FF FF D8 is a JPEG to
  // it). Drop the extra ones, for stb too, so the checks below, which look for FF D8 at offset
  // 0, see the JPEG stb decodes: found by tests/fuzz (a Huffman overflow behind fill bytes).
  // No other format starts with 0xFF, and what remains still does.
  size_t fill = 0;
  while (fill + 1 < file_bytes.size() && uint8_t(file_bytes[fill]) == 0xff && uint8_t(file_bytes[fill + 1]) == 0xff)
    ++fill;
  const std::string trimmed = fill ? file_bytes.substr(fill) : std::string();
  const std::string& bytes = fill ? trimmed : file_bytes;
  TRICK_CHECK(bytes.size() <= static_cast<size_t>(INT_MAX), name, ": the file is ", bytes.size(),
              " bytes, too large to decode");
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  const int len = static_cast<int>(bytes.size());
  const char* format = sniff_format(bytes);

  auto check_size = [&](int64_t w, int64_t h) {
    TRICK_CHECK(w <= kMaxImageSide && h <= kMaxImageSide && w * h <= kMaxImagePixels, name,
                ": the image declares a size of ", w, "x", h, " (", std::round(double(w) * h / 1e5) / 10,
                " megapixels); images over ", kMaxImagePixels / 1000000, " megapixels or ", kMaxImageSide,
                " pixels a side are refused");
  };
  int64_t dw = 0, dh = 0;
  if (declared_size(bytes, format, &dw, &dh)) check_size(dw, dh);
  if (format && std::strcmp(format, "JPEG") == 0) {
    const std::string bad = check_jpeg_huffman_tables(bytes);
    TRICK_CHECK(bad.empty(), name, ": truncated or corrupt JPEG file (", bad, ")");
  }

  int w = 0, h = 0, comp = 0;
  clear_stb_failure();
  if (!stbi_info_from_memory(data, len, &w, &h, &comp)) {
    if (format && (std::strcmp(format, "WebP") == 0 || std::strcmp(format, "TIFF") == 0))
      fail(name, ": ", format, " images are not supported (trick reads PNG, JPEG, BMP and GIF)");
    if (format) fail(name, ": truncated or corrupt ", format, " file (", stb_reason(format), ")");
    fail(name, ": not an image in a format trick reads (PNG, JPEG, BMP, GIF)");
  }
  TRICK_CHECK(w >= 1 && h >= 1, name, ": the image declares an empty size ", w, "x", h);
  check_size(w, h);  // formats declared_size does not know

  // Gray sources (with or without alpha) load as gray, colour ones as RGB; stb then
  // replicates gray and drops alpha exactly as PIL's convert does.
  const int load_comp = (channels == 1 && comp <= 2) ? 1 : 3;
  StbPixels px;
  int lw = 0, lh = 0, lcomp = 0;
  clear_stb_failure();
  px.p = stbi_load_from_memory(data, len, &lw, &lh, &lcomp, load_comp);
  if (!px.p) fail(name, ": truncated or corrupt ", format ? format : "image", " file (", stb_reason(format), ")");
  TRICK_CHECK(lw == w && lh == h, name, ": the decoder read ", lw, "x", lh, " pixels, the header says ", w, "x", h);

  Tensor out = Tensor::empty(Shape{h, w, channels});
  float* o = out.data();
  const int64_t pixels = int64_t(w) * h;
  if (channels == load_comp) {
    const int64_t n = pixels * channels;
    for (int64_t i = 0; i < n; ++i) o[i] = px.p[i] / 255.f;
  } else {  // RGB -> L
    for (int64_t i = 0; i < pixels; ++i) o[i] = pil_luma(px.p + 3 * i) / 255.f;
  }
  return out;
}

Tensor load_image(const std::string& path, int channels) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) fail(path, ": no such file");
    fail(path, ": cannot access (", std::strerror(errno), ")");
  }
  TRICK_CHECK(!S_ISDIR(st.st_mode), path, ": is a directory, not an image file");
  TRICK_CHECK(S_ISREG(st.st_mode), path, ": not a regular file");
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open (", std::strerror(errno), ")");
  std::ostringstream ss;
  ss << f.rdbuf();
  TRICK_CHECK(!f.bad(), path, ": read error");
  return decode_image(ss.str(), path, channels);
}

uint8_t to_8bit(float x) {
  if (!(x > 0.f)) return 0;  // also NaN
  if (x >= 1.f) return 255;
  return static_cast<uint8_t>(std::lround(x * 255.f));
}

Tensor quantize_8bit(const Tensor& image) {
  TRICK_CHECK(image.defined(), "quantize_8bit: undefined image");
  std::vector<float> v = image.to_vector();
  for (float& x : v) x = to_8bit(x) / 255.f;
  return Tensor::from_vector(image.shape(), v);
}

std::string encode_png(const Tensor& image) {
  TRICK_CHECK(image.defined(), "png: undefined image");
  Shape s = image.shape();
  TRICK_CHECK(s.ndim == 3 || (s.ndim == 4 && s[0] == 1), "png: image must be (H, W, C) or (1, H, W, C), got ",
              s.str());
  const int64_t h = s[-3], w = s[-2], c = s[-1];
  TRICK_CHECK(c == 1 || c == 3, "png: image must have 1 (gray) or 3 (RGB) channels, got ", s.str());
  TRICK_CHECK(h >= 1 && w >= 1 && h <= kMaxImageSide && w <= kMaxImageSide, "png: image size ", h, "x", w,
              " outside 1..", kMaxImageSide);
  const std::vector<float> v = image.to_vector();
  std::vector<uint8_t> px(v.size());
  for (size_t i = 0; i < v.size(); ++i) px[i] = to_8bit(v[i]);
  std::string out;
  auto append = [](void* ctx, void* data, int size) {
    static_cast<std::string*>(ctx)->append(static_cast<const char*>(data), static_cast<size_t>(size));
  };
  const int ok = stbi_write_png_to_func(append, &out, static_cast<int>(w), static_cast<int>(h), static_cast<int>(c),
                                        px.data(), static_cast<int>(w * c));
  TRICK_CHECK(ok && !out.empty(), "png: encoding a ", h, "x", w, "x", c, " image failed");
  return out;
}

void save_png(const std::string& path, const Tensor& image) {
  std::string bytes;
  try {
    bytes = encode_png(image);
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  atomic_write(path, bytes);
}

}  // namespace trick
