#include "tools/lib/render.h"

#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>

#include "tools/lib/number_format.h"

namespace trick {
namespace {

// ---- colours (r, g, b in 0..1) ------------------------------------------------------------
struct Color {
  double r, g, b;
};
const Color kBackground{1, 1, 1};
const Color kText{0.12, 0.12, 0.12};
const Color kSubtle{0.38, 0.38, 0.38};
const Color kGrid{0.91, 0.91, 0.91};
const Color kAxis{0.35, 0.35, 0.35};
const Color kSeparator{0.82, 0.82, 0.82};
const Color kProb{0.12, 0.47, 0.71};    // the prediction: blue
const Color kTarget{0.84, 0.15, 0.16};  // the target: red, as in the article
const Color kLoss{0.42, 0.24, 0.60};
const Color kSuccess{0.10, 0.55, 0.20};
const char* kFont = "DejaVu Sans";

// ---- cairo ownership -----------------------------------------------------------------------
struct SurfaceDeleter {
  void operator()(cairo_surface_t* s) const { cairo_surface_destroy(s); }
};
struct ContextDeleter {
  void operator()(cairo_t* c) const { cairo_destroy(c); }
};
using Surface = std::unique_ptr<cairo_surface_t, SurfaceDeleter>;
using Context = std::unique_ptr<cairo_t, ContextDeleter>;

void check_cairo(cairo_status_t st, const char* what) {
  if (st != CAIRO_STATUS_SUCCESS) fail("render_frame: cairo (", what, "): ", cairo_status_to_string(st));
}

Surface surface_from_rgb8(const Rgb8Image& img) {
  Surface s(cairo_image_surface_create(CAIRO_FORMAT_RGB24, img.width, img.height));
  check_cairo(cairo_surface_status(s.get()), "image surface");
  cairo_surface_flush(s.get());
  unsigned char* data = cairo_image_surface_get_data(s.get());
  const int stride = cairo_image_surface_get_stride(s.get());
  for (int y = 0; y < img.height; ++y) {
    uint32_t* row = reinterpret_cast<uint32_t*>(data + static_cast<size_t>(y) * stride);
    for (int x = 0; x < img.width; ++x) {
      const uint8_t* p = img.at(x, y);
      row[x] = (uint32_t{p[0]} << 16) | (uint32_t{p[1]} << 8) | uint32_t{p[2]};
    }
  }
  cairo_surface_mark_dirty(s.get());
  return s;
}

Rgb8Image rgb8_from_surface(cairo_surface_t* s) {
  cairo_surface_flush(s);
  const int w = cairo_image_surface_get_width(s), h = cairo_image_surface_get_height(s);
  const unsigned char* data = cairo_image_surface_get_data(s);
  const int stride = cairo_image_surface_get_stride(s);
  Rgb8Image out(w, h);
  for (int y = 0; y < h; ++y) {
    const uint32_t* row = reinterpret_cast<const uint32_t*>(data + static_cast<size_t>(y) * stride);
    for (int x = 0; x < w; ++x) {
      uint8_t* p = out.at(x, y);
      p[0] = (row[x] >> 16) & 0xff;
      p[1] = (row[x] >> 8) & 0xff;
      p[2] = row[x] & 0xff;
    }
  }
  return out;
}

// ---- text ------------------------------------------------------------------------------------
enum class Align { kLeft, kCenter, kRight };

void set_color(cairo_t* cr, const Color& c, double alpha = 1) { cairo_set_source_rgba(cr, c.r, c.g, c.b, alpha); }

void set_font(cairo_t* cr, double size, bool bold) {
  cairo_select_font_face(cr, kFont, CAIRO_FONT_SLANT_NORMAL, bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
}

double text_width(cairo_t* cr, const std::string& s) {
  cairo_text_extents_t e;
  cairo_text_extents(cr, s.c_str(), &e);
  return e.x_advance;
}

// Drops whole UTF-8 characters from the end (adding an ellipsis) until the text fits.
std::string fit_text(cairo_t* cr, std::string s, double max_width) {
  if (text_width(cr, s) <= max_width) return s;
  while (!s.empty()) {
    size_t n = s.size() - 1;
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
    s.erase(n);
    while (!s.empty() && s.back() == ' ') s.pop_back();
    if (text_width(cr, s + "\u2026") <= max_width) return s + "\u2026";
  }
  return "";
}

// Draws at baseline y; returns the advance width.
double draw_text(cairo_t* cr, const std::string& s, double x, double y, Align align = Align::kLeft) {
  const double w = text_width(cr, s);
  if (align == Align::kCenter) x -= w / 2;
  if (align == Align::kRight) x -= w;
  cairo_move_to(cr, x, y);
  cairo_show_text(cr, s.c_str());
  return w;
}

// "x128", "x2.5": the factor a change is multiplied by on its way to the screen.
std::string amplification(double a) { return a >= 10 ? format_number("%.0f", a) : format_number("%.2g", a); }

std::string class_name(const std::string& label, int index) {
  return label.empty() ? cat("class ", index) : label;
}

// ---- layout --------------------------------------------------------------------------------
struct Metrics {
  double u;  // scale relative to the 960x720 design
  double px(double v) const { return v * u; }
  double font(double v) const { return std::max(v * u, 12.0); }
};

struct Panels {
  Metrics m;
  double title_h, qw, qh;
  double px0(int col) const { return col * qw; }
  double py0(int row) const { return title_h + row * qh; }
};

Panels panels(const RenderOptions& opt) {
  Panels p;
  p.m.u = std::min(opt.width / 960.0, opt.height / 720.0);
  p.title_h = std::round(p.m.px(38));
  p.qw = opt.width / 2.0;
  p.qh = (opt.height - p.title_h) / 2.0;
  return p;
}

struct Checked {
  int h = 0, w = 0, c = 0;
  int classes = 0;
  int top1 = 0;
  float top1_prob = 0, target_prob = 0;
};

Checked check_info(const FrameInfo& info, const RenderOptions& opt) {
  TRICK_CHECK(opt.width >= 480 && opt.height >= 360 && opt.width <= 8192 && opt.height <= 8192,
              "render_frame: frame size ", opt.width, "x", opt.height, " outside 480x360 .. 8192x8192");
  Checked c;
  image_dims(info.image, "render_frame: image", &c.h, &c.w, &c.c);
  if (info.delta.defined()) {
    int h, w, ch;
    image_dims(info.delta, "render_frame: delta", &h, &w, &ch);
    TRICK_CHECK(h == c.h && w == c.w && ch == c.c, "render_frame: delta is ", info.delta.shape().str(),
                ", the image is ", info.image.shape().str());
  }
  TRICK_CHECK(!info.probs.empty() && info.probs.size() <= 1000000, "render_frame: ", info.probs.size(),
              " class probabilities (expected 1 .. 1000000)");
  c.classes = static_cast<int>(info.probs.size());
  TRICK_CHECK(info.target >= -1 && info.target < c.classes, "render_frame: target ", info.target, " outside 0 .. ",
              c.classes - 1);
  TRICK_CHECK(info.top1 >= -1 && info.top1 < c.classes, "render_frame: top-1 ", info.top1, " outside 0 .. ",
              c.classes - 1);
  TRICK_CHECK(info.step >= 0 && info.total_steps >= 0, "render_frame: negative step ", info.step, " / ",
              info.total_steps);
  c.top1 = info.top1;
  if (c.top1 < 0) {
    c.top1 = 0;
    for (int k = 1; k < c.classes; ++k)
      if (info.probs[k] > info.probs[c.top1]) c.top1 = k;
  }
  c.top1_prob = info.top1_prob >= 0 ? info.top1_prob : info.probs[c.top1];
  c.target_prob = info.target < 0 ? 0.f : info.target_prob >= 0 ? info.target_prob : info.probs[info.target];
  return c;
}

FrameLayout layout_for(const Panels& p, const Checked& c, const FrameInfo& info) {
  const Metrics& m = p.m;
  FrameLayout L;
  // Image and delta: the same box in both upper panels, below a header, above a caption.
  const double header = m.px(30), footer = m.px(50), side = m.px(14);
  const double aw = p.qw - 2 * side, ah = p.qh - header - footer;
  const double fit = std::min(aw / c.w, ah / c.h);
  // Enlarging: a whole factor, so every image pixel becomes the same square. Shrinking: exact fit.
  L.image_scale = fit >= 1 ? std::floor(fit) : fit;
  const int dw = std::max(1, static_cast<int>(std::lround(c.w * L.image_scale)));
  const int dh = std::max(1, static_cast<int>(std::lround(c.h * L.image_scale)));
  const int top = static_cast<int>(std::lround(p.py0(0) + header + (ah - dh) / 2));
  for (int col = 0; col < 2; ++col) {
    PixelRect& r = col == 0 ? L.image : L.delta;
    r = {static_cast<int>(std::lround(p.px0(col) + (p.qw - dw) / 2)), top, dw, dh};
  }
  // Plots: room for a two-line header above, tick labels and an axis label below and left.
  const double plot_top = p.py0(1) + m.px(56), plot_bottom = p.py0(1) + p.qh - m.px(46);
  const double left = m.px(66), right = m.px(20);
  for (int col = 0; col < 2; ++col) {
    PixelRect& r = col == 0 ? L.prob_plot : L.loss_plot;
    r.x = static_cast<int>(std::lround(p.px0(col) + left));
    r.y = static_cast<int>(std::lround(plot_top));
    r.w = static_cast<int>(std::lround(p.qw - left - right));
    r.h = static_cast<int>(std::lround(plot_bottom - plot_top));
  }
  L.loss_x_end = std::max({info.total_steps, info.step, static_cast<int>(info.loss_history.size()) - 1, 1});
  return L;
}

// ---- plots -----------------------------------------------------------------------------------
struct Axes {
  PixelRect r;
  double x0, x1, y0, y1;
  double X(double v) const { return r.x + (v - x0) / (x1 - x0) * r.w; }
  double Y(double v) const { return r.y + r.h - (v - y0) / (y1 - y0) * r.h; }
};

void draw_axes(cairo_t* cr, const Metrics& m, const Axes& a, const std::vector<double>& xt,
               const std::vector<double>& yt, const std::string& xlabel, const std::string& ylabel) {
  cairo_set_line_width(cr, 1);
  set_color(cr, kGrid);
  for (double v : yt) {
    const double y = std::round(a.Y(v)) + 0.5;
    cairo_move_to(cr, a.r.x, y);
    cairo_line_to(cr, a.r.x + a.r.w, y);
  }
  for (double v : xt) {
    const double x = std::round(a.X(v)) + 0.5;
    cairo_move_to(cr, x, a.r.y);
    cairo_line_to(cr, x, a.r.y + a.r.h);
  }
  cairo_stroke(cr);
  // Frame: left and bottom axis lines.
  set_color(cr, kAxis);
  cairo_move_to(cr, a.r.x + 0.5, a.r.y);
  cairo_line_to(cr, a.r.x + 0.5, a.r.y + a.r.h + 0.5);
  cairo_line_to(cr, a.r.x + a.r.w, a.r.y + a.r.h + 0.5);
  cairo_stroke(cr);
  const double tick = m.px(4);
  set_font(cr, m.font(12), false);
  const double xstep = xt.size() > 1 ? xt[1] - xt[0] : 1, ystep = yt.size() > 1 ? yt[1] - yt[0] : 1;
  for (double v : xt) {
    const double x = std::round(a.X(v)) + 0.5;
    cairo_move_to(cr, x, a.r.y + a.r.h);
    cairo_line_to(cr, x, a.r.y + a.r.h + tick);
    cairo_stroke(cr);
    draw_text(cr, format_tick(v, xstep), x, a.r.y + a.r.h + tick + m.font(12) + m.px(1), Align::kCenter);
  }
  for (double v : yt) {
    const double y = std::round(a.Y(v)) + 0.5;
    cairo_move_to(cr, a.r.x - tick, y);
    cairo_line_to(cr, a.r.x, y);
    cairo_stroke(cr);
    draw_text(cr, format_tick(v, ystep), a.r.x - tick - m.px(3), y + m.font(12) * 0.36, Align::kRight);
  }
  set_font(cr, m.font(12), false);
  set_color(cr, kSubtle);
  draw_text(cr, xlabel, a.r.x + a.r.w / 2.0, a.r.y + a.r.h + m.px(36), Align::kCenter);
  cairo_save(cr);
  cairo_translate(cr, a.r.x - m.px(50), a.r.y + a.r.h / 2.0);
  cairo_rotate(cr, -M_PI / 2);
  draw_text(cr, ylabel, 0, 0, Align::kCenter);
  cairo_restore(cr);
}

// A short thick line in `c` followed by text; returns the x after it.
double legend_item(cairo_t* cr, const Metrics& m, const Color& c, const std::string& s, double x, double y,
                   double max_w) {
  set_color(cr, c);
  cairo_set_line_width(cr, m.px(3));
  cairo_move_to(cr, x, y - m.px(4));
  cairo_line_to(cr, x + m.px(16), y - m.px(4));
  cairo_stroke(cr);
  set_color(cr, kText);
  const double tx = x + m.px(21);
  return tx + draw_text(cr, fit_text(cr, s, max_w - m.px(21)), tx, y);
}

void panel_header(cairo_t* cr, const Metrics& m, double x, double y, double max_w, const std::string& bold,
                  const std::string& rest) {
  set_font(cr, m.font(14), true);
  set_color(cr, kText);
  const double w = draw_text(cr, fit_text(cr, bold, max_w), x, y);
  set_font(cr, m.font(13), false);
  set_color(cr, kSubtle);
  if (!rest.empty() && w < max_w) draw_text(cr, fit_text(cr, rest, max_w - w), x + w, y);
}

void draw_image_panel(cairo_t* cr, const Panels& p, const FrameLayout& L, const Checked& c, const FrameInfo& info) {
  const Metrics& m = p.m;
  const double x0 = p.px0(0) + m.px(14), max_w = p.qw - m.px(28);
  panel_header(cr, m, x0, p.py0(0) + m.px(21), max_w, "Image",
               cat("   step ", info.step, " / ", std::max(info.total_steps, info.step)));
  const Rgb8Image img = rgb8_from_tensor(info.image, "render_frame: image");
  Surface s = surface_from_rgb8(img);
  cairo_save(cr);
  cairo_rectangle(cr, L.image.x, L.image.y, L.image.w, L.image.h);
  cairo_clip(cr);
  cairo_translate(cr, L.image.x, L.image.y);
  cairo_scale(cr, static_cast<double>(L.image.w) / c.w, static_cast<double>(L.image.h) / c.h);
  cairo_set_source_surface(cr, s.get(), 0, 0);
  cairo_pattern_t* pat = cairo_get_source(cr);
  // Nearest when enlarging keeps small images' pixels square; smooth filtering when shrinking.
  cairo_pattern_set_filter(pat, L.image_scale >= 1 ? CAIRO_FILTER_NEAREST : CAIRO_FILTER_GOOD);
  cairo_pattern_set_extend(pat, CAIRO_EXTEND_PAD);
  cairo_paint(cr);
  cairo_restore(cr);
  // Caption: the prediction, in green once it is the target.
  const double cy = L.image.y + L.image.h + m.px(22);
  set_font(cr, m.font(14), false);
  const bool reached = info.target >= 0 && c.top1 == info.target;
  set_color(cr, reached ? kSuccess : kText);
  std::string caption = cat("top-1: ", class_name(info.top1_label, c.top1), "  ", format_percent(c.top1_prob));
  if (reached) caption += "   \u2713 target";
  draw_text(cr, fit_text(cr, caption, max_w), p.px0(0) + p.qw / 2, cy, Align::kCenter);
}

void draw_delta_panel(cairo_t* cr, const Panels& p, const FrameLayout& L, const Checked& c, const FrameInfo& info,
                      const RenderOptions& opt) {
  const Metrics& m = p.m;
  const double x0 = p.px0(1) + m.px(14), max_w = p.qw - m.px(28);
  float scale255 = 0.f;
  if (info.delta.defined()) scale255 = opt.delta_scale_255 > 0 ? opt.delta_scale_255 : max_abs_value(info.delta) * 255.f;
  const bool any = info.delta.defined() && scale255 > 0;
  const DeltaStyle style = resolve_delta_style(opt.delta_style, c.c);
  panel_header(cr, m, x0, p.py0(0) + m.px(21), max_w, "Change from previous step",
               any ? cat("   \u00d7", amplification(127.5 / scale255)) : "");
  Rgb8Image d = any ? delta_to_rgb8(info.delta, scale255 / 255.f, style, "render_frame: delta")
                    : Rgb8Image(c.w, c.h, kNoChangeGrey);
  Surface s = surface_from_rgb8(d);
  cairo_save(cr);
  cairo_rectangle(cr, L.delta.x, L.delta.y, L.delta.w, L.delta.h);
  cairo_clip(cr);
  cairo_translate(cr, L.delta.x, L.delta.y);
  cairo_scale(cr, static_cast<double>(L.delta.w) / c.w, static_cast<double>(L.delta.h) / c.h);
  cairo_set_source_surface(cr, s.get(), 0, 0);
  // Nearest also when shrinking: averaging would turn +-1/255 noise into a flat grey that
  // reads as "no change"; sampled pixels keep the size of the change visible.
  cairo_pattern_set_filter(cairo_get_source(cr), CAIRO_FILTER_NEAREST);
  cairo_pattern_set_extend(cairo_get_source(cr), CAIRO_EXTEND_PAD);
  cairo_paint(cr);
  cairo_restore(cr);
  const double cx = p.px0(1) + p.qw / 2, top = L.delta.y + L.delta.h;
  if (!any) {
    set_font(cr, m.font(13), false);
    set_color(cr, kSubtle);
    draw_text(cr, info.delta.defined() ? "no change" : "no change yet (the original image)", cx, top + m.px(22),
              Align::kCenter);
    return;
  }
  // Colour bar: what -s, 0 and +s look like, with s in 8-bit levels.
  const double bw = std::min(m.px(220), max_w * 0.6), bh = m.px(10);
  const double bx = std::round(cx - bw / 2), by = std::round(top + m.px(8));
  const int n = std::max(2, static_cast<int>(bw));
  for (int i = 0; i < n; ++i) {
    const float t = -1.f + 2.f * (i + 0.5f) / n;
    uint8_t rgb[3];
    if (style == DeltaStyle::kDiverging) {
      diverging_color(t, rgb);
    } else {
      const uint8_t g = static_cast<uint8_t>(std::lround(t < 0 ? kNoChangeGrey * (1 + t) : kNoChangeGrey + t * (255 - kNoChangeGrey)));
      rgb[0] = rgb[1] = rgb[2] = g;
    }
    cairo_set_source_rgb(cr, rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0);
    cairo_rectangle(cr, bx + bw * i / n, by, bw / n + 0.5, bh);
    cairo_fill(cr);
  }
  set_color(cr, kAxis);
  cairo_set_line_width(cr, 1);
  cairo_rectangle(cr, bx + 0.5, by + 0.5, bw - 1, bh - 1);
  cairo_stroke(cr);
  set_font(cr, m.font(12), false);
  set_color(cr, kText);
  const double ly = by + bh + m.px(14);
  const std::string s255 = format_levels(scale255);
  draw_text(cr, cat("\u2212", s255, "/255"), bx, ly, Align::kCenter);
  draw_text(cr, "0", bx + bw / 2, ly, Align::kCenter);
  draw_text(cr, cat("+", s255, "/255"), bx + bw, ly, Align::kCenter);
  set_color(cr, kSubtle);
  draw_text(cr, style == DeltaStyle::kPerChannel ? "per channel" : "channel mean", bx + bw + m.px(34), by + bh - 1);
}

void draw_prob_panel(cairo_t* cr, const Panels& p, const FrameLayout& L, const Checked& c, const FrameInfo& info) {
  const Metrics& m = p.m;
  const double x0 = p.px0(0) + m.px(14), max_w = p.qw - m.px(28);
  panel_header(cr, m, x0, p.py0(1) + m.px(21), max_w, "Prediction", cat("   probability of each of ", c.classes,
                                                                          " classes"));
  set_font(cr, m.font(13), false);
  const double ly = p.py0(1) + m.px(43);
  const double half = max_w / 2;
  legend_item(cr, m, kProb, cat("top-1: ", class_name(info.top1_label, c.top1), " ", format_percent(c.top1_prob)), x0, ly,
              info.target >= 0 ? half - m.px(8) : max_w);
  if (info.target >= 0)
    legend_item(cr, m, kTarget,
                cat("target: ", class_name(info.target_label, info.target), " ", format_percent(c.target_prob)), x0 + half,
                ly, half);

  const int K = c.classes;
  Axes a{L.prob_plot, 0, static_cast<double>(std::max(K - 1, 1)), 0, 1};
  const std::vector<double> xt = nice_ticks(0, K - 1, std::max(2, L.prob_plot.w / static_cast<int>(m.px(38))));
  draw_axes(cr, m, a, xt, nice_ticks(0, 1, 5), "class index", "probability");
  auto prob = [&](int k) {
    const float v = info.probs[k];
    return v == v ? std::clamp(static_cast<double>(v), 0.0, 1.0) : 0.0;
  };
  // The prediction: filled area and line (one point per class).
  cairo_save(cr);
  cairo_rectangle(cr, L.prob_plot.x - m.px(5), L.prob_plot.y - m.px(5), L.prob_plot.w + m.px(10),
                  L.prob_plot.h + m.px(10));
  cairo_clip(cr);
  cairo_move_to(cr, a.X(0), a.Y(0));
  for (int k = 0; k < K; ++k) cairo_line_to(cr, a.X(k), a.Y(prob(k)));
  cairo_line_to(cr, a.X(K - 1), a.Y(0));
  cairo_close_path(cr);
  set_color(cr, kProb, 0.22);
  cairo_fill(cr);
  cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
  for (int k = 0; k < K; ++k) (k ? cairo_line_to : cairo_move_to)(cr, a.X(k), a.Y(prob(k)));
  set_color(cr, kProb);
  cairo_set_line_width(cr, m.px(1.6));
  cairo_stroke(cr);
  if (K <= 40) {
    for (int k = 0; k < K; ++k) {
      cairo_arc(cr, a.X(k), a.Y(prob(k)), m.px(3), 0, 2 * M_PI);
      cairo_fill(cr);
    }
  }
  // The target's one-hot, drawn on top so it stays visible where the prediction matches it.
  if (info.target >= 0) {
    const int t = info.target;
    cairo_move_to(cr, a.X(0), a.Y(t == 0 ? 1 : 0));
    if (t > 1) cairo_line_to(cr, a.X(t - 1), a.Y(0));
    if (t > 0) cairo_line_to(cr, a.X(t), a.Y(1));
    if (t + 1 < K) cairo_line_to(cr, a.X(t + 1), a.Y(0));
    if (t + 1 < K - 1) cairo_line_to(cr, a.X(K - 1), a.Y(0));
    set_color(cr, kTarget);
    cairo_set_line_width(cr, m.px(1.6));
    cairo_stroke(cr);
    if (K <= 40) {
      cairo_arc(cr, a.X(t), a.Y(1), m.px(3.5), 0, 2 * M_PI);
      cairo_fill(cr);
    }
  }
  // The target's current probability on its spike (a filled red dot), and the top-1's peak
  // (a blue ring), so both can be found among 1000 classes.
  if (info.target >= 0) {
    cairo_arc(cr, a.X(info.target), a.Y(prob(info.target)), m.px(4), 0, 2 * M_PI);
    set_color(cr, kTarget);
    cairo_fill_preserve(cr);
    set_color(cr, kBackground);
    cairo_set_line_width(cr, m.px(1));
    cairo_stroke(cr);
  }
  set_color(cr, kProb);
  cairo_arc(cr, a.X(c.top1), a.Y(prob(c.top1)), m.px(4), 0, 2 * M_PI);
  cairo_set_line_width(cr, m.px(1.5));
  cairo_stroke(cr);
  cairo_restore(cr);
}

void draw_loss_panel(cairo_t* cr, const Panels& p, const FrameLayout& L, const FrameInfo& info) {
  const Metrics& m = p.m;
  const double x0 = p.px0(1) + m.px(14), max_w = p.qw - m.px(28);
  panel_header(cr, m, x0, p.py0(1) + m.px(21), max_w, "Loss", cat("   ", info.loss_name));
  const std::vector<float>& h = info.loss_history;
  double lo = INFINITY, hi = -INFINITY;
  int last = -1;
  for (size_t i = 0; i < h.size(); ++i)
    if (std::isfinite(h[i])) {
      lo = std::min(lo, static_cast<double>(h[i]));
      hi = std::max(hi, static_cast<double>(h[i]));
      last = static_cast<int>(i);
    }
  set_font(cr, m.font(13), false);
  set_color(cr, kText);
  const double ly = p.py0(1) + m.px(43);
  if (last >= 0)
    legend_item(cr, m, kLoss, cat("step ", last, ": ", format_number("%.4g", h[last])), x0, ly, max_w);
  else
    draw_text(cr, "no loss values yet", x0, ly);
  if (last < 0) {
    lo = 0;
    hi = 1;
  } else if (hi - lo <= 1e-9 * std::max(1.0, std::fabs(hi))) {
    const double pad = std::max(std::fabs(hi) * 0.1, 1e-3);
    lo -= pad;
    hi += pad;
  } else {
    const double pad = (hi - lo) * 0.05;
    const bool nonneg = lo >= 0;
    lo -= pad;
    hi += pad;
    if (nonneg) lo = std::max(lo, 0.0);  // a loss that cannot go negative gets no negative axis
  }
  std::vector<double> yt = nice_ticks(lo, hi, 5);
  if (yt.size() >= 2) {  // extend the range to whole ticks so the top and bottom are labelled
    const double st = yt[1] - yt[0];
    lo = std::min(lo, yt.front() - (yt.front() - lo > 1e-9 * st ? st : 0));
    hi = std::max(hi, yt.back() + (hi - yt.back() > 1e-9 * st ? st : 0));
    yt = nice_ticks(lo, hi, 6);
  }
  Axes a{L.loss_plot, 0, static_cast<double>(L.loss_x_end), lo, hi};
  draw_axes(cr, m, a, nice_ticks(0, L.loss_x_end, std::max(2, L.loss_plot.w / static_cast<int>(m.px(50)))), yt,
            "step", "loss");
  cairo_save(cr);
  cairo_rectangle(cr, L.loss_plot.x - m.px(5), L.loss_plot.y - m.px(5), L.loss_plot.w + m.px(10),
                  L.loss_plot.h + m.px(10));
  cairo_clip(cr);
  set_color(cr, kLoss);
  cairo_set_line_width(cr, m.px(1.8));
  cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
  bool open = false;  // a non-finite value breaks the line
  for (size_t i = 0; i < h.size(); ++i) {
    if (!std::isfinite(h[i])) {
      open = false;
      continue;
    }
    (open ? cairo_line_to : cairo_move_to)(cr, a.X(i), a.Y(h[i]));
    open = true;
  }
  cairo_stroke(cr);
  if (last >= 0) {
    cairo_arc(cr, a.X(last), a.Y(h[last]), m.px(3.5), 0, 2 * M_PI);
    cairo_fill(cr);
  }
  cairo_restore(cr);
}

void draw_title(cairo_t* cr, const Panels& p, const FrameInfo& info, const RenderOptions& opt) {
  const Metrics& m = p.m;
  const double y = std::round(p.title_h * 0.5 + m.px(6));
  std::string right = cat("\u2016\u03b4\u2016\u221e = ", format_levels(info.linf_255), "/255    \u2016\u03b4\u2016\u2082 = ",
                          format_number("%.1f", info.l2_255), "/255");
  set_font(cr, m.font(13), false);
  const double rw = text_width(cr, right);
  set_color(cr, kSubtle);
  draw_text(cr, right, opt.width - m.px(14), y, Align::kRight);
  std::string left = info.method.empty() ? "attack" : info.method;
  if (info.target >= 0) left += cat("  \u2192  ", class_name(info.target_label, info.target));
  left += info.epsilon_255 > 0 ? cat("    \u03b5 = ", format_levels(info.epsilon_255), "/255") : "    \u03b5 unconstrained";
  set_font(cr, m.font(16), true);
  set_color(cr, kText);
  draw_text(cr, fit_text(cr, left, opt.width - rw - m.px(44)), m.px(14), y);
  // Separators between the title and the panels, and between the panels.
  set_color(cr, kSeparator);
  cairo_set_line_width(cr, 1);
  cairo_move_to(cr, 0, p.title_h - 0.5);
  cairo_line_to(cr, opt.width, p.title_h - 0.5);
  cairo_move_to(cr, std::round(p.qw) - 0.5, p.title_h);
  cairo_line_to(cr, std::round(p.qw) - 0.5, opt.height);
  cairo_move_to(cr, 0, std::round(p.py0(1)) - 0.5);
  cairo_line_to(cr, opt.width, std::round(p.py0(1)) - 0.5);
  cairo_stroke(cr);
}

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int max_count) {
  std::vector<double> out;
  if (!(std::isfinite(lo) && std::isfinite(hi)) || max_count < 1) return out;
  if (hi < lo) std::swap(lo, hi);
  if (hi - lo <= 0) return {lo};
  const double raw = (hi - lo) / max_count;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag * 10;
  for (double f : {1.0, 2.0, 5.0, 10.0})
    if (f * mag >= raw * (1 - 1e-9)) {
      step = f * mag;
      break;
    }
  const double first = std::ceil(lo / step - 1e-9) * step;
  for (int i = 0; first + i * step <= hi + step * 1e-9 && i <= max_count + 1; ++i) out.push_back(first + i * step);
  return out;
}

FrameLayout frame_layout(const FrameInfo& info, const RenderOptions& opt) {
  const Checked c = check_info(info, opt);
  return layout_for(panels(opt), c, info);
}

Rgb8Image render_frame(const FrameInfo& info, const RenderOptions& opt) {
  const Checked c = check_info(info, opt);
  const Panels p = panels(opt);
  const FrameLayout L = layout_for(p, c, info);

  Surface surface(cairo_image_surface_create(CAIRO_FORMAT_RGB24, opt.width, opt.height));
  check_cairo(cairo_surface_status(surface.get()), "frame surface");
  Context ctx(cairo_create(surface.get()));
  cairo_t* cr = ctx.get();
  check_cairo(cairo_status(cr), "context");
  cairo_font_options_t* fo = cairo_font_options_create();
  cairo_font_options_set_antialias(fo, CAIRO_ANTIALIAS_GRAY);
  cairo_font_options_set_hint_style(fo, CAIRO_HINT_STYLE_SLIGHT);
  cairo_font_options_set_hint_metrics(fo, CAIRO_HINT_METRICS_ON);
  cairo_set_font_options(cr, fo);
  cairo_font_options_destroy(fo);

  set_color(cr, kBackground);
  cairo_paint(cr);
  draw_title(cr, p, info, opt);
  draw_image_panel(cr, p, L, c, info);
  draw_delta_panel(cr, p, L, c, info, opt);
  draw_prob_panel(cr, p, L, c, info);
  draw_loss_panel(cr, p, L, info);
  check_cairo(cairo_status(cr), "drawing");
  return rgb8_from_surface(surface.get());
}

Rgb8Image render_perturbation(const Tensor& delta, float* scale_out, DeltaStyle style, int min_size) {
  int h, w, c;
  image_dims(delta, "render_perturbation: delta", &h, &w, &c);
  TRICK_CHECK(min_size >= 0 && min_size <= 8192, "render_perturbation: min_size ", min_size, " outside 0 .. 8192");
  const float scale = max_abs_value(delta);
  if (scale_out) *scale_out = scale * 255.f;
  Rgb8Image img = delta_to_rgb8(delta, scale, style, "render_perturbation: delta");
  const int longer = std::max(h, w);
  const int factor = longer >= min_size ? 1 : (min_size + longer - 1) / longer;
  return upscale_nearest(img, factor);
}

}  // namespace trick
