// Image decoding (libjpeg-turbo for JPEG, libpng for PNG, giflib for GIF, libwebp for WebP,
// stb_image for BMP) and PNG encoding (libpng). This file holds the one implementation of stb
// in the library.
#include "tools/lib/image.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "tools/lib/atomic_file.h"

#include <csetjmp>
// jpeglib.h needs size_t and FILE declared before it.
#include <cstdio>
#include <gif_lib.h>
#include <jerror.h>
#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>
#include <webp/demux.h>

#define STB_IMAGE_IMPLEMENTATION
// stb decodes only BMP: PNG, JPEG, GIF and WebP go through libpng, libjpeg-turbo (what PIL
// decodes JPEGs with), giflib and libwebp (what PIL decodes WebP with), all fuzzed upstream.
// No TGA, whose header has no signature, so random bytes are never taken for an image.
#define STBI_ONLY_BMP
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <stb_image.h>
#pragma GCC diagnostic pop

namespace trick {

namespace {

// The format a file claims by its first bytes, for error messages and to pick the decoder.
const char* sniff_format(const std::string& b) {
  auto starts = [&](const char* magic, size_t n) { return b.size() >= n && std::memcmp(b.data(), magic, n) == 0; };
  if (starts("\x89PNG\r\n\x1a\n", 8)) return "PNG";
  if (starts("\xff\xd8\xff", 3)) return "JPEG";  // PIL's test too: SOI and the next marker
  if (starts("GIF87a", 6) || starts("GIF89a", 6)) return "GIF";  // PIL's test too
  if (starts("BM", 2)) return "BMP";
  if (starts("RIFF", 4) && b.size() >= 12 && b.compare(8, 4, "WEBP") == 0) return "WebP";
  if (starts("II*\0", 4) || starts("MM\0*", 4)) return "TIFF";
  return nullptr;
}

// stb keeps the reason of its last failure in a global that nothing resets, and some
// failures set none: clear it before each call. Within one call, stb first tries the
// formats before the right one, whose signature checks leave their own reasons; such a
// reason from another format is dropped.
void clear_stb_failure() { stbi__g_failure_reason = nullptr; }
std::string stb_reason(const char* format) {
  static const struct {
    const char* reason;
    const char* format;
  } kSignatureFailures[] = {{"not BMP", "BMP"}};
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
uint32_t le32(const std::string& b, size_t i) { return le16(b, i) | (le16(b, i + 2) << 16); }

// The size the header of a PNG, JPEG, GIF, BMP or extended (VP8X) WebP declares, read before
// any decoder runs, so a huge declared size reads as "too large" (not "corrupt") and nothing
// is allocated for it. False if unknown.
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
  if (f == "WebP" && b.size() >= 31 && b.compare(12, 4, "VP8X") == 0) {  // the canvas, 24 bits less one each
    *w = (le32(b, 24) & 0xffffff) + 1, *h = (le32(b, 27) & 0xffffff) + 1;
    return true;
  }
  if (f == "BMP" && b.size() >= 26) {
    if (le32(b, 14) == 12) {  // OS/2 BITMAPCOREHEADER: 16-bit sizes
      *w = le16(b, 18), *h = le16(b, 20);
      return true;
    }
    const int32_t bw = static_cast<int32_t>(le32(b, 18)), bh = static_cast<int32_t>(le32(b, 22));
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

// A BMP of w x h pixels, read by stb as uncompressed, holds its rows at bfOffBits,
// each padded to 4 bytes; stb reads missing bytes as zeros, so a 200-byte file declaring
// 5000 x 5000 pixels would take seconds to "decode". "" if the file holds the rows (the
// last row's padding may be missing), else what is short. w and h passed size_problem().
std::string bmp_data_problem(const std::string& b, int64_t w, int64_t h) {
  if (b.size() < 30) return "";  // stb reports the short header
  const bool core = le32(b, 14) == 12;
  if (!core && b.size() < 34) return "";
  const uint32_t bpp = core ? le16(b, 24) : le16(b, 28), compression = core ? 0 : le32(b, 30);
  // stb refuses RLE (1, 2) and reads every other compression value as uncompressed rows.
  if (compression == 1 || compression == 2 || bpp == 0 || bpp > 32) return "";
  const uint64_t row = (uint64_t(bpp) * w + 31) / 32 * 4, last = (uint64_t(bpp) * w + 7) / 8;
  const uint64_t need = uint64_t(le32(b, 10)) + row * uint64_t(h - 1) + last;
  if (b.size() >= need) return "";
  return cat("the pixel data ends early: the file has ", b.size(), " bytes, ", w, "x", h, " pixels at ", bpp,
             " bits need ", need);
}

// "" if an image of w x h pixels may be decoded, else why not.
std::string size_problem(int64_t w, int64_t h, int64_t max_pixels) {
  if (w <= kMaxImageSide && h <= kMaxImageSide && w * h <= max_pixels) return "";
  return cat("the image declares a size of ", w, "x", h, " (", std::round(double(w) * h / 1e5) / 10,
             " megapixels); images over ", double(max_pixels) / 1e6, " megapixels or ", kMaxImageSide,
             " pixels a side are refused");
}

// PIL's RGB -> L (Convert.c, L24): ITU-R 601-2 luma in 16-bit fixed point, rounded.
uint8_t pil_luma(const uint8_t* rgb) {
  return static_cast<uint8_t>((rgb[0] * 19595u + rgb[1] * 38470u + rgb[2] * 7471u + 0x8000u) >> 16);
}

// In: the largest image to decode. Out, when a decoder fails: why, and whether it was the size.
struct DecodeFailure {
  int64_t max_pixels = kMaxImagePixels;
  std::string reason;
  bool size = false;
  // True (with reason and size set) when a w x h image is over the limit.
  bool too_large(int64_t w, int64_t h) {
    reason = size_problem(w, h, max_pixels);
    size = !reason.empty();
    return size;
  }
};

// --- JPEG: libjpeg-turbo, set up as PIL 9.4 sets it up (JpegDecode.c) -------------------------
// Default DCT (islow) and fancy upsampling; YCbCr/RGB out as RGB, gray as gray, CMYK/YCCK
// out as CMYK, which PIL reads as inverted ("CMYK;I", the Adobe convention, assumed for
// every CMYK JPEG) and converts to RGB with cmyk2rgb. So the RGB pixels equal PIL's.

// A progressive JPEG may have any number of scans, each a pass over the whole image: a
// few-kilobyte file with thousands of scans takes minutes to decode. libjpeg-turbo's own
// tools (djpeg -maxscans, the TurboJPEG API) refuse more than 500; so does this.
constexpr int kMaxJpegScans = 500;

struct JpegErrors {
  jpeg_error_mgr mgr;  // first: libjpeg passes &mgr as cinfo->err
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {0};
};

[[noreturn]] void jpeg_fail(j_common_ptr c) {
  auto* e = reinterpret_cast<JpegErrors*>(c->err);
  if (!e->message[0]) (*c->err->format_message)(c, e->message);
  std::longjmp(e->jump, 1);
}

// Warnings (level -1) are corrupt-data notes libjpeg decodes past (as djpeg does; PIL
// decodes past most of them too, and refuses a few such files), except the end of the data
// before the end of the image: PIL calls that "image file is truncated" (libjpeg would fill
// the rest with gray). Trace messages (level >= 0) are ignored.
void jpeg_message(j_common_ptr c, int level) {
  if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) jpeg_fail(c);
}

void jpeg_progress(j_common_ptr c) {
  auto* d = reinterpret_cast<j_decompress_ptr>(c);
  if (c->is_decompressor && d->progressive_mode && d->input_scan_number > kMaxJpegScans) {
    auto* e = reinterpret_cast<JpegErrors*>(c->err);
    std::snprintf(e->message, sizeof e->message, "progressive JPEG with more than %d scans", kMaxJpegScans);
    std::longjmp(e->jump, 1);
  }
}

// Everything run_jpeg's setjmp frame touches lives here, owned by the caller, so nothing
// it reads after a longjmp is a local changed since setjmp, and no destructor is jumped over.
struct JpegJob {
  jpeg_decompress_struct cinfo;
  bool created = false;
  JpegErrors errors;
  jpeg_progress_mgr progress{};
  std::vector<uint8_t> cmyk_row;
  ~JpegJob() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

// Pillow's cmyk2rgb (Convert.c) on the inverted samples libjpeg returns for an Adobe CMYK JPEG.
void cmyk_to_rgb(const uint8_t* raw, uint8_t* rgb) {
  const int nk = raw[3];  // 255 - k with k = 255 - raw[3]
  for (int i = 0; i < 3; ++i) {
    const int t = (255 - raw[i]) * nk + 128;
    const int v = nk - (((t >> 8) + t) >> 8);
    rgb[i] = static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
  }
}

bool run_jpeg(JpegJob* job, const std::string* bytes, DecodedImage* out, DecodeFailure* failure) {
  if (setjmp(job->errors.jump)) {
    failure->reason = job->errors.message;
    return false;
  }
  jpeg_decompress_struct* c = &job->cinfo;
  jpeg_create_decompress(c);
  job->created = true;
  job->progress.progress_monitor = jpeg_progress;
  c->progress = &job->progress;
  jpeg_mem_src(c, reinterpret_cast<const unsigned char*>(bytes->data()), static_cast<unsigned long>(bytes->size()));
  jpeg_read_header(c, TRUE);
  if (failure->too_large(c->image_width, c->image_height)) return false;
  bool cmyk = false;
  if (c->jpeg_color_space == JCS_GRAYSCALE) {
    c->out_color_space = JCS_GRAYSCALE;
  } else if (c->jpeg_color_space == JCS_CMYK || c->jpeg_color_space == JCS_YCCK) {
    c->out_color_space = JCS_CMYK, cmyk = true;
  } else if (c->num_components == 3) {
    c->out_color_space = JCS_RGB;
  } else {
    failure->reason = cat("a JPEG with ", c->num_components, " colour components");
    return false;
  }
  jpeg_start_decompress(c);
  const size_t w = c->output_width, h = c->output_height;
  const int comp = cmyk ? 3 : c->output_components;
  out->allocate(static_cast<int>(w), static_cast<int>(h), comp);
  if (cmyk) job->cmyk_row.resize(w * 4);
  while (c->output_scanline < c->output_height) {
    const size_t y = c->output_scanline;
    JSAMPROW row = cmyk ? job->cmyk_row.data() : out->pixels.get() + y * w * comp;
    jpeg_read_scanlines(c, &row, 1);
    if (cmyk)
      for (size_t x = 0; x < w; ++x) cmyk_to_rgb(job->cmyk_row.data() + 4 * x, out->pixels.get() + (y * w + x) * 3);
  }
  // Like PIL, whatever follows the last scan is not read (a missing EOI is not an error).
  return true;
}

bool decode_jpeg(const std::string& bytes, DecodedImage* out, DecodeFailure* failure) {
  JpegJob job;
  job.cinfo.err = jpeg_std_error(&job.errors.mgr);
  job.errors.mgr.error_exit = jpeg_fail;
  job.errors.mgr.emit_message = jpeg_message;
  return run_jpeg(&job, &bytes, out, failure);
}

// --- PNG: libpng, converted as PIL 9.4 converts ----------------------------------------------
// Palette -> its colours, gray below 8 bits scaled to 0..255, 16 bits -> the high byte, alpha
// and tRNS dropped (not composited), gamma and colour chunks ignored: PIL's convert("RGB").

struct PngState {
  std::jmp_buf jump;
  char message[200] = {0};
  const std::string* bytes = nullptr;
  size_t pos = 0;
};

[[noreturn]] void png_fail(png_structp png, png_const_charp msg) {
  auto* s = static_cast<PngState*>(png_get_error_ptr(png));
  if (!s->message[0]) std::snprintf(s->message, sizeof s->message, "%s", msg);
  std::longjmp(s->jump, 1);
}
void png_warn(png_structp, png_const_charp) {}  // ancillary-chunk trouble: skipped, as PIL does
void png_read_bytes(png_structp png, png_bytep data, size_t n) {
  auto* s = static_cast<PngState*>(png_get_io_ptr(png));
  if (n > s->bytes->size() - s->pos) png_fail(png, "the file ends early");
  std::memcpy(data, s->bytes->data() + s->pos, n);
  s->pos += n;
}

// Everything run_png's setjmp frame touches, owned by the caller (see JpegJob).
struct PngJob {
  PngState state;
  png_structp png = nullptr;
  png_infop info = nullptr;
  std::vector<png_bytep> rows;
  ~PngJob() {
    if (png) png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
  }
};

bool run_png(PngJob* job, DecodedImage* out, DecodeFailure* failure) {
  if (setjmp(job->state.jump)) {
    failure->reason = job->state.message;
    return false;
  }
  // The error handler is ours (png_fail longjmps to state.jump), from creation on.
  job->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &job->state, png_fail, png_warn);
  if (!job->png) throw std::bad_alloc();
  job->info = png_create_info_struct(job->png);
  if (!job->info) throw std::bad_alloc();
  png_structp png = job->png;
  png_infop info = job->info;
  png_set_read_fn(png, &job->state, png_read_bytes);
  png_set_user_limits(png, 0x7fffffff, 0x7fffffff);  // size_problem() is the limit
  png_read_info(png, info);
  const png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  if (failure->too_large(w, h)) return false;
  const int type = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
  if (depth == 16) png_set_strip_16(png);  // the high byte, as PIL's "RGB;16B" unpacker
  if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const int comp = png_get_channels(png, info);
  if ((comp != 1 && comp != 3) || png_get_rowbytes(png, info) != size_t(w) * comp) {
    failure->reason = "unexpected pixel layout after conversion to 8 bits";
    return false;
  }
  out->allocate(static_cast<int>(w), static_cast<int>(h), comp);
  job->rows.resize(h);
  for (png_uint_32 y = 0; y < h; ++y) job->rows[y] = out->pixels.get() + size_t(y) * w * comp;
  png_read_image(png, job->rows.data());
  // Like PIL, the chunks after the image data are not read (a missing IEND is not an error).
  return true;
}

bool decode_png(const std::string& bytes, DecodedImage* out, DecodeFailure* failure) {
  PngJob job;
  job.state.bytes = &bytes;
  return run_png(&job, out, failure);
}

// --- GIF: giflib, the first frame as PIL 9.4 reads it ----------------------------------------
// The canvas is the logical screen, grown to hold the frame if it sticks out; outside the
// frame it holds the frame's transparent index if its graphic control block sets one, else
// index 0. Indices map through the frame's local colour table, else the global one; an
// index past the table is the gray (i, i, i) of PIL's default palette. Transparency is
// otherwise ignored (convert("RGB") keeps the colour). Later frames are not read.

struct GifReader {
  const std::string* bytes;
  size_t pos = 0;
};

int gif_read(GifFileType* gif, GifByteType* out, int n) {
  auto* r = static_cast<GifReader*>(gif->UserData);
  const size_t k = std::min(static_cast<size_t>(std::max(n, 0)), r->bytes->size() - r->pos);
  std::memcpy(out, r->bytes->data() + r->pos, k);
  r->pos += k;
  return static_cast<int>(k);
}

struct GifFile {
  GifFileType* gif = nullptr;
  ~GifFile() {
    int error = 0;
    if (gif) DGifCloseFile(gif, &error);
  }
};

std::string gif_error(int code) {
  const char* s = GifErrorString(code);
  const std::string what = s ? s : cat("giflib error ", code);
  return code == D_GIF_ERR_READ_FAILED ? cat("the file ends early; giflib: ", what) : what;
}

bool decode_gif(const std::string& bytes, DecodedImage* out, DecodeFailure* failure) {
  GifReader reader{&bytes};
  GifFile f;
  int error = 0;
  f.gif = DGifOpen(&reader, gif_read, &error);
  if (!f.gif) {
    failure->reason = gif_error(error);
    return false;
  }
  GifFileType* gif = f.gif;
  int transparent = -1;  // from the graphic control extension before the first frame
  for (;;) {
    GifRecordType type = UNDEFINED_RECORD_TYPE;
    if (DGifGetRecordType(gif, &type) == GIF_ERROR) {
      failure->reason = gif_error(gif->Error);
      return false;
    }
    if (type == TERMINATE_RECORD_TYPE) {
      failure->reason = "the file holds no image";
      return false;
    }
    if (type == EXTENSION_RECORD_TYPE) {
      int code = 0;
      GifByteType* block = nullptr;
      if (DGifGetExtension(gif, &code, &block) == GIF_ERROR) {
        failure->reason = gif_error(gif->Error);
        return false;
      }
      if (code == GRAPHICS_EXT_FUNC_CODE && block && block[0] >= 4) transparent = (block[1] & 1) ? block[4] : -1;
      while (block) {
        if (DGifGetExtensionNext(gif, &block) == GIF_ERROR) {
          failure->reason = gif_error(gif->Error);
          return false;
        }
      }
      continue;
    }
    if (type != IMAGE_DESC_RECORD_TYPE) continue;
    if (DGifGetImageDesc(gif) == GIF_ERROR) {
      failure->reason = gif_error(gif->Error);
      return false;
    }
    const GifImageDesc& d = gif->Image;
    const int64_t fw = d.Width, fh = d.Height, left = d.Left, top = d.Top;
    const int64_t w = std::max<int64_t>(gif->SWidth, left + fw), h = std::max<int64_t>(gif->SHeight, top + fh);
    if (failure->too_large(w, h)) return false;
    if (w < 1 || h < 1 || fw < 1 || fh < 1) {
      failure->reason = cat("an empty frame (", fw, "x", fh, " at ", left, ",", top, ")");
      return false;
    }
    const int fill = transparent >= 0 ? transparent : 0;
    std::vector<uint8_t> index(static_cast<size_t>(w * h), static_cast<uint8_t>(fill));
    // Rows in file order: top to bottom, or the four interlace passes.
    static const int kStart[4] = {0, 4, 2, 1}, kStep[4] = {8, 8, 4, 2};
    const int passes = d.Interlace ? 4 : 1;
    for (int pass = 0; pass < passes; ++pass) {
      const int64_t start = d.Interlace ? kStart[pass] : 0, step = d.Interlace ? kStep[pass] : 1;
      for (int64_t y = start; y < fh; y += step) {
        GifPixelType* row = index.data() + (top + y) * w + left;
        if (DGifGetLine(gif, row, static_cast<int>(fw)) == GIF_ERROR) {
          failure->reason = gif_error(gif->Error);
          return false;
        }
      }
    }
    const ColorMapObject* map = d.ColorMap ? d.ColorMap : gif->SColorMap;
    const int colors = map ? map->ColorCount : 0;
    out->allocate(static_cast<int>(w), static_cast<int>(h), 3);
    uint8_t* rgb = out->pixels.get();
    for (size_t i = 0; i < index.size(); ++i) {
      const int k = index[i];
      if (k < colors) {
        const GifColorType& c = map->Colors[k];
        rgb[3 * i] = c.Red, rgb[3 * i + 1] = c.Green, rgb[3 * i + 2] = c.Blue;
      } else {
        rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = static_cast<uint8_t>(k);
      }
    }
    return true;
  }
}

// --- WebP: libwebp, the first frame as PIL 9.4 reads it (WebPImagePlugin, _webp.c) ----------
// PIL decodes every WebP, still or animated, lossy or lossless, with libwebp's animation
// decoder at its defaults: non-premultiplied RGBA, lossy frames with fancy upsampling, the
// first frame drawn on a transparent black canvas; convert("RGB") then drops alpha. The same
// decoder here gives the same pixels.

std::string webp_status(VP8StatusCode status) {
  switch (status) {
    case VP8_STATUS_NOT_ENOUGH_DATA:
      return "the file ends early";
    case VP8_STATUS_BITSTREAM_ERROR:
      return "libwebp: bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE:
      return "libwebp: a feature it does not support";
    case VP8_STATUS_OUT_OF_MEMORY:
      return "libwebp: out of memory";
    default:
      return cat("libwebp status ", static_cast<int>(status));
  }
}

struct WebPAnimDecoderPtr {
  WebPAnimDecoder* p = nullptr;
  ~WebPAnimDecoderPtr() { WebPAnimDecoderDelete(p); }
};

bool decode_webp(const std::string& bytes, DecodedImage* out, DecodeFailure* failure) {
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  // The RIFF header's size (sniff_format saw 12 bytes): a file cut short says so, rather than
  // "corrupt" (the container parser refuses it with no reason).
  const uint64_t riff = uint64_t(le32(bytes, 4)) + 8;
  if (riff > bytes.size()) {
    failure->reason = cat("the file ends early: its RIFF header says ", riff, " bytes, the file has ", bytes.size());
    return false;
  }
  WebPBitstreamFeatures features;
  const VP8StatusCode status = WebPGetFeatures(data, bytes.size(), &features);
  if (status != VP8_STATUS_OK) {
    failure->reason = webp_status(status);
    return false;
  }
  // The canvas size (VP8X) or the image's, which is the canvas: checked before the decoder
  // allocates it.
  if (failure->too_large(features.width, features.height)) return false;
  const WebPData webp = {data, bytes.size()};
  WebPAnimDecoderPtr dec;
  dec.p = WebPAnimDecoderNew(&webp, nullptr);  // defaults: MODE_RGBA, no threads (PIL's)
  WebPAnimInfo info;
  if (!dec.p || !WebPAnimDecoderGetInfo(dec.p, &info)) {
    failure->reason = "libwebp cannot read its chunks";
    return false;
  }
  uint8_t* rgba = nullptr;
  int timestamp = 0;
  if (!WebPAnimDecoderGetNext(dec.p, &rgba, &timestamp)) {  // also where a file holds no frame
    failure->reason = "libwebp cannot decode the first frame";
    return false;
  }
  const int w = static_cast<int>(info.canvas_width), h = static_cast<int>(info.canvas_height);
  out->allocate(w, h, 3);
  uint8_t* rgb = out->pixels.get();
  for (size_t i = 0, n = size_t(w) * h; i < n; ++i) std::memcpy(rgb + 3 * i, rgba + 4 * i, 3);  // alpha dropped
  return true;
}

// --- BMP: stb_image ---------------------------------------------------------------------------

struct StbPixels {
  stbi_uc* p = nullptr;
  ~StbPixels() { stbi_image_free(p); }
};

bool decode_stb(const std::string& bytes, const char* format, DecodedImage* out, DecodeFailure* failure) {
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  const int len = static_cast<int>(bytes.size());
  int w = 0, h = 0, comp = 0;
  clear_stb_failure();
  if (!stbi_info_from_memory(data, len, &w, &h, &comp)) {
    failure->reason = stb_reason(format);
    return false;
  }
  if (failure->too_large(w, h)) return false;  // formats declared_size does not know
  if (w < 1 || h < 1) {
    failure->reason = cat("the image declares an empty size ", w, "x", h);
    return false;
  }
  // Gray sources (with or without alpha) load as gray, colour ones as RGB; stb drops alpha
  // as PIL's convert does.
  const int load_comp = comp <= 2 ? 1 : 3;
  StbPixels px;
  int lw = 0, lh = 0, lcomp = 0;
  clear_stb_failure();
  px.p = stbi_load_from_memory(data, len, &lw, &lh, &lcomp, load_comp);
  if (!px.p) {
    failure->reason = stb_reason(format);
    return false;
  }
  if (lw != w || lh != h) {
    failure->reason = cat("the decoder read ", lw, "x", lh, " pixels, the header says ", w, "x", h);
    return false;
  }
  out->allocate(w, h, load_comp);
  std::memcpy(out->pixels.get(), px.p, size_t(w) * h * load_comp);
  return true;
}

}  // namespace

void DecodedImage::allocate(int w, int h, int c) {
  width = w, height = h, channels = c;
  pixels.reset(new uint8_t[size_t(w) * h * c]);
}

bool DecodedImage::in_colour() const {
  if (channels == 1) return false;
  const uint8_t* p = pixels.get();
  for (size_t i = 0, n = size_t(width) * height; i < n; ++i, p += 3)
    if (p[0] != p[1] || p[0] != p[2]) return true;
  return false;
}

namespace {

void check_channels(int channels, const std::string& name) {
  TRICK_CHECK(channels == 1 || channels == 3, name, ": images load with 1 or 3 channels, not ", channels);
}

}  // namespace

std::string image_decoders() {
  // Run time where the library says (libpng, libwebp), else the headers built against.
  const uint32_t png = png_access_version_number(), webp = static_cast<uint32_t>(WebPGetDecoderVersion());
#define TRICK_STRINGIFY2(x) #x
#define TRICK_STRINGIFY(x) TRICK_STRINGIFY2(x)
  return cat("PNG (libpng ", png / 10000, ".", png / 100 % 100, ".", png % 100, "), JPEG (libjpeg-turbo ",
             TRICK_STRINGIFY(LIBJPEG_TURBO_VERSION), "), GIF (giflib ", GIFLIB_MAJOR, ".", GIFLIB_MINOR, ".",
             GIFLIB_RELEASE, "), WebP (libwebp ", webp >> 16, ".", (webp >> 8) & 0xff, ".", webp & 0xff,
             "), BMP (stb_image)");
#undef TRICK_STRINGIFY
#undef TRICK_STRINGIFY2
}

Tensor decode_image(const std::string& bytes, const std::string& name, int channels, int64_t max_pixels) {
  check_channels(channels, name);
  return image_tensor(decode_image_file(bytes, name, max_pixels), channels);
}

DecodedImage decode_image_file(const std::string& bytes, const std::string& name, int64_t max_pixels) {
  TRICK_CHECK(max_pixels >= 1 && max_pixels <= kMaxImagePixels, name, ": a pixel limit of ", max_pixels,
              " is outside 1..", kMaxImagePixels);
  TRICK_CHECK(!bytes.empty(), name, ": the file is empty (0 bytes), not an image");
  TRICK_CHECK(bytes.size() <= static_cast<size_t>(INT_MAX), name, ": the file is ", bytes.size(),
              " bytes, too large to decode");
  const char* format = sniff_format(bytes);
  if (!format) fail(name, ": not an image in a format trick reads (PNG, JPEG, BMP, GIF, WebP)");
  const std::string f = format;
  if (f == "TIFF") fail(name, ": ", format, " images are not supported (trick reads PNG, JPEG, BMP, GIF and WebP)");
  int64_t dw = 0, dh = 0;
  if (declared_size(bytes, format, &dw, &dh)) {
    const std::string big = size_problem(dw, dh, max_pixels);
    TRICK_CHECK(big.empty(), name, ": ", big);
    TRICK_CHECK(dw >= 1 && dh >= 1, name, ": the image declares an empty size ", dw, "x", dh);
    if (f == "BMP") {
      // RLE-compressed BMPs (compression 1 and 2 in an info header) are valid files that stb
      // does not decode: say so, rather than call them corrupt.
      const bool rle = bytes.size() >= 34 && le32(bytes, 14) >= 40 && (le32(bytes, 30) == 1 || le32(bytes, 30) == 2);
      TRICK_CHECK(!rle, name, ": RLE-compressed BMP images are not supported (trick reads uncompressed BMP; ",
                  "save it as PNG)");
      const std::string short_data = bmp_data_problem(bytes, dw, dh);
      TRICK_CHECK(short_data.empty(), name, ": truncated or corrupt BMP file (", short_data, ")");
    }
  }

  DecodedImage image;
  DecodeFailure failure;
  failure.max_pixels = max_pixels;
  const bool ok = f == "JPEG"  ? decode_jpeg(bytes, &image, &failure)
                  : f == "PNG" ? decode_png(bytes, &image, &failure)
                  : f == "GIF" ? decode_gif(bytes, &image, &failure)
                  : f == "WebP" ? decode_webp(bytes, &image, &failure)
                               : decode_stb(bytes, format, &image, &failure);
  if (!ok) {
    if (failure.size) fail(name, ": ", failure.reason);
    fail(name, ": truncated or corrupt ", format, " file (", failure.reason.empty() ? "no reason given" : failure.reason,
         ")");
  }
  return image;
}

Tensor image_tensor(const DecodedImage& image, int channels) {
  check_channels(channels, "image_tensor");
  TRICK_CHECK(image.pixels && (image.channels == 1 || image.channels == 3), "image_tensor: no decoded image");
  Tensor out = Tensor::empty(Shape{image.height, image.width, channels});
  float* o = out.data();
  const int64_t pixels = int64_t(image.width) * image.height;
  const uint8_t* p = image.pixels.get();
  if (channels == image.channels) {
    const int64_t n = pixels * channels;
    for (int64_t i = 0; i < n; ++i) o[i] = p[i] / 255.f;
  } else if (channels == 3) {  // gray -> RGB: replicated
    for (int64_t i = 0; i < pixels; ++i) o[3 * i] = o[3 * i + 1] = o[3 * i + 2] = p[i] / 255.f;
  } else {  // RGB -> L
    for (int64_t i = 0; i < pixels; ++i) o[i] = pil_luma(p + 3 * i) / 255.f;
  }
  return out;
}

Tensor load_image(const std::string& path, int channels) {
  check_channels(channels, path);
  return image_tensor(read_image_file(path), channels);
}

DecodedImage read_image_file(const std::string& path) {
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
  return decode_image_file(ss.str(), path);
}

ImageFiles::ImageFiles(const std::vector<std::string>& paths, size_t budget) {
  size_t held = 0;
  for (const std::string& path : paths) {
    if (held >= budget) break;
    if (kept_.count(path)) continue;
    DecodedImage image = read_image_file(path);
    held += size_t(image.width) * image.height * image.channels;
    kept_.emplace(path, std::move(image));
  }
}

DecodedImage ImageFiles::take(const std::string& path) {
  auto it = kept_.find(path);
  if (it == kept_.end()) return read_image_file(path);
  DecodedImage image = std::move(it->second);
  kept_.erase(it);
  return image;
}

uint8_t to_8bit(float x) {
  if (!(x > 0.f)) return 0;  // also NaN
  if (x >= 1.f) return 255;
  // std::lround(x * 255.f), which is >= 0 here: the floor after adding 0.5, exact in double
  // (an inline conversion, not a libm call per pixel).
  return static_cast<uint8_t>(static_cast<int>(static_cast<double>(x * 255.f) + 0.5));
}

Tensor quantize_8bit(const Tensor& image) {
  TRICK_CHECK(image.defined(), "quantize_8bit: undefined image");
  std::vector<float> v = image.to_vector();
  for (float& x : v) x = to_8bit(x) / 255.f;
  return Tensor::from_vector(image.shape(), v);
}

namespace {

void png_write_bytes(png_structp png, png_bytep data, size_t n) {
  static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<const char*>(data), n);
}
void png_flush_none(png_structp) {}

// Everything run_png_write's setjmp frame touches, owned by the caller (as PngJob).
struct PngWriteJob {
  PngState state;
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~PngWriteJob() {
    if (png) png_destroy_write_struct(&png, info ? &info : nullptr);
  }
};

bool run_png_write(PngWriteJob* job, const uint8_t* px, int w, int h, int c, std::string* out) {
  if (setjmp(job->state.jump)) return false;
  job->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &job->state, png_fail, png_warn);
  if (!job->png) return false;
  job->info = png_create_info_struct(job->png);
  if (!job->info) return false;
  png_structp png = job->png;
  png_set_write_fn(png, out, png_write_bytes, png_flush_none);
  png_set_IHDR(png, job->info, static_cast<png_uint_32>(w), static_cast<png_uint_32>(h), 8,
               c == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  // zlib level 1 with libpng's adaptive row filters: on a 12-megapixel photo 3x faster than
  // stb_image_write (which trick used before) and a third smaller; level 6 would save
  // another 15% of the bytes for 6x the time.
  png_set_compression_level(png, 1);
  png_write_info(png, job->info);
  for (int y = 0; y < h; ++y) png_write_row(png, px + static_cast<size_t>(y) * w * c);
  png_write_end(png, nullptr);
  return true;
}

}  // namespace

std::string encode_png_8bit(const uint8_t* px, int64_t w, int64_t h, int c) {
  TRICK_CHECK(c == 1 || c == 3, "png: image must have 1 (gray) or 3 (RGB) channels, got ", c);
  TRICK_CHECK(h >= 1 && w >= 1 && h <= kMaxImageSide && w <= kMaxImageSide, "png: image size ", h, "x", w,
              " outside 1..", kMaxImageSide);
  std::string out;
  PngWriteJob job;
  if (!run_png_write(&job, px, static_cast<int>(w), static_cast<int>(h), c, &out))
    fail("png: encoding a ", h, "x", w, "x", c, " image failed",
         job.state.message[0] ? cat(": ", job.state.message) : std::string());
  return out;
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
  return encode_png_8bit(px.data(), w, h, static_cast<int>(c));
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
