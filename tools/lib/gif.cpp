#include "tools/lib/gif.h"

#include <gif_lib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <unordered_map>

#include "tools/lib/atomic_file.h"

namespace trick {

// ---- palette ---------------------------------------------------------------------------------

namespace {

// Colours are binned into 6-bit-per-channel cells (at most 3 levels from the cell's mean).
constexpr int kCellBits = 6;
constexpr int kCells = 1 << (3 * kCellBits);

struct Cell {
  float c[3];      // mean colour of the pixels in the cell
  double weight;   // pixel count
};

float dist2(const float* a, const float* b) {
  const float d0 = a[0] - b[0], d1 = a[1] - b[1], d2 = a[2] - b[2];
  return d0 * d0 + d1 * d1 + d2 * d2;
}

int nearest(const float* c, const std::vector<std::array<float, 3>>& pal) {
  int best = 0;
  float bd = INFINITY;
  for (size_t k = 0; k < pal.size(); ++k) {
    const float d = dist2(c, pal[k].data());
    if (d < bd) bd = d, best = static_cast<int>(k);
  }
  return best;
}

// Median cut on cells: repeatedly split the box with the largest weighted squared error
// along its widest-spread channel at the weighted median.
std::vector<std::array<float, 3>> median_cut(const std::vector<Cell>& cells, std::vector<int> ids, int boxes_wanted) {
  struct Box {
    int begin, end;
    double sse;
  };
  auto stats = [&](int b, int e, double* mean, double* var) {
    double w = 0, s[3] = {0, 0, 0}, q[3] = {0, 0, 0};
    for (int i = b; i < e; ++i) {
      const Cell& c = cells[ids[i]];
      w += c.weight;
      for (int k = 0; k < 3; ++k) {
        s[k] += c.weight * c.c[k];
        q[k] += c.weight * c.c[k] * c.c[k];
      }
    }
    for (int k = 0; k < 3; ++k) {
      mean[k] = s[k] / w;
      var[k] = std::max(0.0, q[k] - s[k] * s[k] / w);  // weighted SSE along k
    }
  };
  std::vector<Box> boxes;
  auto add = [&](int b, int e) {
    double m[3], v[3];
    stats(b, e, m, v);
    boxes.push_back({b, e, e - b > 1 ? v[0] + v[1] + v[2] : 0.0});
  };
  add(0, static_cast<int>(ids.size()));
  while (static_cast<int>(boxes.size()) < boxes_wanted) {
    auto it = std::max_element(boxes.begin(), boxes.end(), [](const Box& a, const Box& b) { return a.sse < b.sse; });
    if (it->sse <= 0) break;
    const Box box = *it;
    double m[3], v[3];
    stats(box.begin, box.end, m, v);
    const int axis = static_cast<int>(std::max_element(v, v + 3) - v);
    std::sort(ids.begin() + box.begin, ids.begin() + box.end,
              [&](int a, int b) { return cells[a].c[axis] < cells[b].c[axis]; });
    double total = 0, acc = 0;
    for (int i = box.begin; i < box.end; ++i) total += cells[ids[i]].weight;
    int split = box.begin + 1;
    for (int i = box.begin; i < box.end - 1; ++i) {
      acc += cells[ids[i]].weight;
      split = i + 1;
      if (acc >= total / 2) break;
    }
    boxes.erase(it);
    add(box.begin, split);
    add(split, box.end);
  }
  std::vector<std::array<float, 3>> pal;
  for (const Box& b : boxes) {
    double m[3], v[3];
    stats(b.begin, b.end, m, v);
    pal.push_back({static_cast<float>(m[0]), static_cast<float>(m[1]), static_cast<float>(m[2])});
  }
  return pal;
}

}  // namespace

// More than 256 colours: colours covering at least 0.1% of the frame (background, text,
// plot lines, the delta panel's saturated colours) get an entry of their own, exact; median
// cut spends the rest on everything else (the photograph), refined by a few k-means
// (Lloyd) passes; every pixel then takes the nearest entry.
static PalettedImage quantize_adaptive(const Rgb8Image& frame, PalettedImage out) {
  const size_t n = static_cast<size_t>(frame.width) * frame.height;
  auto cell_of = [](const uint8_t* p) {
    return ((p[0] >> (8 - kCellBits)) << (2 * kCellBits)) | ((p[1] >> (8 - kCellBits)) << kCellBits) |
           (p[2] >> (8 - kCellBits));
  };
  std::vector<uint32_t> count(kCells, 0);
  std::vector<uint64_t> sum(static_cast<size_t>(kCells) * 3, 0);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* p = &frame.pixels[i * 3];
    const int c = cell_of(p);
    ++count[c];
    for (int k = 0; k < 3; ++k) sum[static_cast<size_t>(c) * 3 + k] += p[k];
  }
  std::vector<Cell> cells;
  std::vector<int> cell_slot(kCells, -1);
  for (int c = 0; c < kCells; ++c)
    if (count[c]) {
      cell_slot[c] = static_cast<int>(cells.size());
      Cell cell;
      for (int k = 0; k < 3; ++k) cell.c[k] = static_cast<float>(sum[static_cast<size_t>(c) * 3 + k]) / count[c];
      cell.weight = count[c];
      cells.push_back(cell);
    }
  // Frequent colours first, exact.
  std::vector<int> order(cells.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return cells[a].weight > cells[b].weight; });
  const double frequent = std::max(1.0, n / 1000.0);
  std::vector<std::array<float, 3>> pal;
  std::vector<int> rest;
  for (int id : order) {
    if (cells[id].weight >= frequent && pal.size() < 96)
      pal.push_back({std::round(cells[id].c[0]), std::round(cells[id].c[1]), std::round(cells[id].c[2])});
    else
      rest.push_back(id);
  }
  const size_t fixed = pal.size();
  if (!rest.empty()) {
    const std::vector<std::array<float, 3>> more = median_cut(cells, rest, 256 - static_cast<int>(fixed));
    pal.insert(pal.end(), more.begin(), more.end());
  }
  // Lloyd passes move the median-cut entries to the mean of what they stand for; the frequent
  // colours stay exact.
  std::vector<int> assign(cells.size());
  for (int pass = 0; pass < 3; ++pass) {
    std::vector<double> acc(pal.size() * 4, 0.0);
    for (size_t i = 0; i < cells.size(); ++i) {
      const int k = assign[i] = nearest(cells[i].c, pal);
      for (int ch = 0; ch < 3; ++ch) acc[k * 4 + ch] += cells[i].weight * cells[i].c[ch];
      acc[k * 4 + 3] += cells[i].weight;
    }
    for (size_t k = fixed; k < pal.size(); ++k)
      if (acc[k * 4 + 3] > 0)
        for (int ch = 0; ch < 3; ++ch) pal[k][ch] = std::round(static_cast<float>(acc[k * 4 + ch] / acc[k * 4 + 3]));
  }
  for (size_t i = 0; i < cells.size(); ++i) assign[i] = nearest(cells[i].c, pal);
  out.palette.resize(pal.size() * 3);
  for (size_t k = 0; k < pal.size(); ++k)
    for (int ch = 0; ch < 3; ++ch) out.palette[k * 3 + ch] = static_cast<uint8_t>(std::clamp(pal[k][ch], 0.f, 255.f));
  for (size_t i = 0; i < n; ++i) out.indices[i] = static_cast<uint8_t>(assign[cell_slot[cell_of(&frame.pixels[i * 3])]]);
  return out;
}


PalettedImage quantize_frame(const Rgb8Image& frame) {
  TRICK_CHECK(!frame.empty() && frame.pixels.size() == static_cast<size_t>(frame.width) * frame.height * 3,
              "quantize_frame: empty or inconsistent frame ", frame.width, "x", frame.height);
  PalettedImage out;
  out.width = frame.width;
  out.height = frame.height;
  const size_t n = static_cast<size_t>(frame.width) * frame.height;
  out.indices.resize(n);

  // Few colours (plots, text, a grey picture): use them exactly.
  std::unordered_map<uint32_t, int> exact;
  bool few = true;
  for (size_t i = 0; i < n && few; ++i) {
    const uint8_t* p = &frame.pixels[i * 3];
    const uint32_t key = (uint32_t{p[0]} << 16) | (uint32_t{p[1]} << 8) | p[2];
    auto it = exact.find(key);
    if (it == exact.end()) {
      if (exact.size() == 256) {
        few = false;
        break;
      }
      it = exact.emplace(key, static_cast<int>(exact.size())).first;
      out.palette.insert(out.palette.end(), p, p + 3);
    }
    out.indices[i] = static_cast<uint8_t>(it->second);
  }
  if (few) return out;

  return quantize_adaptive(frame, std::move(out));
}

// ---- writer ----------------------------------------------------------------------------------

struct GifWriter::Impl {
  std::string path;
  int width = 0, height = 0;
  GifOptions opt;
  std::unique_ptr<AtomicFile> file;
  GifFileType* gif = nullptr;
  PalettedImage pending;
  int pending_delay = 0;
  bool has_pending = false;
  bool finished = false;
  int frames = 0;

  // Unfinished (or failed): close giflib's handle, which writes into the temporary; the
  // AtomicFile member is destroyed after this and removes the temporary.
  ~Impl() {
    if (gif) {
      int err = 0;
      EGifCloseFile(gif, &err);
    }
  }

  [[noreturn]] void giflib_failed(const char* what, int code) {
    const char* msg = GifErrorString(code);
    fail("cannot write ", path, ": giflib ", what, ": ", msg ? msg : "unknown error");
  }
  void check(int rc, const char* what) {
    if (rc != GIF_OK) giflib_failed(what, gif ? gif->Error : 0);
  }

  void close_gif() {
    if (!gif) return;
    int err = 0;
    GifFileType* g = gif;
    gif = nullptr;
    if (EGifCloseFile(g, &err) != GIF_OK) giflib_failed("close", err);
  }

  void write_frame(const PalettedImage& f, int delay_cs) {
    GraphicsControlBlock gcb{};
    gcb.DisposalMode = DISPOSE_DO_NOT;
    gcb.UserInputFlag = false;
    gcb.DelayTime = std::clamp(delay_cs, 0, 65535);
    gcb.TransparentColor = NO_TRANSPARENT_COLOR;
    GifByteType ext[4];
    const size_t len = EGifGCBToExtension(&gcb, ext);
    check(EGifPutExtension(gif, GRAPHICS_EXT_FUNC_CODE, static_cast<int>(len), ext), "graphics control");
    // Palettes must have a power-of-two size; unused entries stay black.
    const int colours = static_cast<int>(f.palette.size() / 3);
    const int map_size = 1 << std::max(1, GifBitSize(colours));
    std::vector<GifColorType> colors(map_size, GifColorType{0, 0, 0});
    for (int k = 0; k < colours; ++k) colors[k] = {f.palette[k * 3], f.palette[k * 3 + 1], f.palette[k * 3 + 2]};
    ColorMapObject* map = GifMakeMapObject(map_size, colors.data());
    if (!map) fail("cannot write ", path, ": out of memory for a palette");
    const int rc = EGifPutImageDesc(gif, 0, 0, width, height, false, map);
    GifFreeMapObject(map);  // giflib keeps its own copy
    check(rc, "image descriptor");
    std::vector<GifPixelType> row(width);
    for (int y = 0; y < height; ++y) {
      std::memcpy(row.data(), &f.indices[static_cast<size_t>(y) * width], width);
      check(EGifPutLine(gif, row.data(), width), "image data");
    }
  }
};

static int write_to_file(GifFileType* gif, const GifByteType* data, int len) {
  auto* file = static_cast<AtomicFile*>(gif->UserData);
  return static_cast<int>(std::fwrite(data, 1, static_cast<size_t>(len), file->file()));
}

GifWriter::GifWriter(const std::string& path, int width, int height, GifOptions opt) : impl_(new Impl) {
  Impl& s = *impl_;
  s.path = path;
  s.width = width;
  s.height = height;
  s.opt = opt;
  TRICK_CHECK(width > 0 && height > 0 && width <= 65535 && height <= 65535, "cannot write ", path, ": GIF size ",
              width, "x", height, " outside 1 .. 65535");
  TRICK_CHECK(opt.delay_cs >= 0 && opt.last_delay_cs >= 0 && opt.loop_count >= 0 && opt.loop_count <= 65535,
              "cannot write ", path, ": negative delay or loop count");
  s.file = std::make_unique<AtomicFile>(path);
  int err = 0;
  s.gif = EGifOpen(s.file.get(), write_to_file, &err);
  if (!s.gif) s.giflib_failed("open", err);
  EGifSetGifVersion(s.gif, true);  // GIF89a: needed for delays and looping
  s.check(EGifPutScreenDesc(s.gif, width, height, 8, 0, nullptr), "screen descriptor");
  // NETSCAPE2.0 application extension: the loop count browsers honour.
  s.check(EGifPutExtensionLeader(s.gif, APPLICATION_EXT_FUNC_CODE), "loop extension");
  s.check(EGifPutExtensionBlock(s.gif, 11, "NETSCAPE2.0"), "loop extension");
  const GifByteType loop[3] = {1, static_cast<GifByteType>(opt.loop_count & 0xff),
                               static_cast<GifByteType>(opt.loop_count >> 8)};
  s.check(EGifPutExtensionBlock(s.gif, 3, loop), "loop extension");
  s.check(EGifPutExtensionTrailer(s.gif), "loop extension");
}

GifWriter::~GifWriter() = default;

void GifWriter::add_frame(const Rgb8Image& frame, int delay_cs) {
  Impl& s = *impl_;
  TRICK_CHECK(!s.finished && s.gif, "cannot write ", s.path, ": frame added after finish() or an error");
  TRICK_CHECK(frame.width == s.width && frame.height == s.height, "cannot write ", s.path, ": frame is ", frame.width,
              "x", frame.height, ", the animation is ", s.width, "x", s.height);
  PalettedImage q = quantize_frame(frame);
  if (s.has_pending) s.write_frame(s.pending, s.pending_delay);
  s.pending = std::move(q);
  s.pending_delay = delay_cs >= 0 ? delay_cs : s.opt.delay_cs;
  s.has_pending = true;
  ++s.frames;
}

void GifWriter::finish() {
  Impl& s = *impl_;
  TRICK_CHECK(!s.finished && s.gif, "cannot write ", s.path, ": finish() after finish() or an error");
  TRICK_CHECK(s.has_pending, "cannot write ", s.path, ": an animation needs at least one frame");
  s.write_frame(s.pending, s.opt.last_delay_cs);
  s.has_pending = false;
  s.close_gif();
  s.file->commit();
  s.finished = true;
}

int GifWriter::frames_added() const { return impl_->frames; }
const std::string& GifWriter::path() const { return impl_->path; }

std::vector<int> pick_frames(int steps, int max_frames) {
  TRICK_CHECK(steps >= 0, "pick_frames: negative step count ", steps);
  if (steps == 0) return {0};
  TRICK_CHECK(max_frames >= 2, "pick_frames: max_frames ", max_frames, " < 2 (first and last are always kept)");
  const int64_t n = std::min<int64_t>(int64_t{steps} + 1, max_frames);
  std::vector<int> out(static_cast<size_t>(n));
  // Rounded i * steps / (n - 1): spacing >= 1 before rounding, so the values stay distinct.
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<int>((2 * i * steps + (n - 1)) / (2 * (n - 1)));
  return out;
}

std::vector<int> pick_frames_front(int steps, int max_frames) {
  if (steps + 1 <= max_frames || max_frames < 4) return pick_frames(steps, max_frames);
  const int head = max_frames / 2;  // steps 0 .. head - 1, every one
  std::vector<int> out;
  for (int i = 0; i < head; ++i) out.push_back(i);
  for (int t : pick_frames(steps - head, max_frames - head)) out.push_back(head + t);
  return out;
}

}  // namespace trick
