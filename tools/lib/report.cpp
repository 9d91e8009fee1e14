#include "tools/lib/report.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>

#include "tensor/error.h"
#include "tools/lib/atomic_file.h"
#include "tools/lib/number_format.h"
#include "tools/lib/render.h"

namespace trick {
namespace {

std::string class_text(const ReportClass& c) {
  std::string name = c.label.empty() ? cat("class ", c.index) : c.label;
  return c.index >= 0 ? cat(name, " (", c.index, ")") : name;
}

const char* kStyle = R"(
body { font-family: "DejaVu Sans", Verdana, sans-serif; color: #1f1f1f; margin: 24px auto; max-width: 1040px;
       padding: 0 16px; line-height: 1.4; }
h1 { font-size: 22px; margin: 0 0 8px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.verdict { font-size: 15px; padding: 8px 12px; border-radius: 4px; }
.ok { background: #e6f4ea; border-left: 4px solid #1a8c33; }
.partial { background: #fff4e0; border-left: 4px solid #d98c00; }
.bad { background: #fbe9e9; border-left: 4px solid #d62728; }
.pics { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; }
figure img { display: block; max-width: 320px; max-height: 320px; border: 1px solid #ccc; }
figure img.pixelated { image-rendering: pixelated; }
figcaption { font-size: 13px; color: #555; margin-top: 4px; max-width: 320px; }
img.anim { max-width: 100%; border: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 14px; }
td, th { padding: 4px 12px 4px 0; text-align: left; vertical-align: top; }
th { color: #555; font-weight: normal; }
table.kv th { white-space: nowrap; }
table.top td.p { text-align: right; font-variant-numeric: tabular-nums; }
tr.target td { color: #d62728; font-weight: bold; }
.tops { display: flex; flex-wrap: wrap; gap: 40px; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
svg text { font-family: "DejaVu Sans", Verdana, sans-serif; }
code { font-size: 13px; word-break: break-all; }
footer { margin-top: 32px; font-size: 12px; color: #777; }
)";

// One line plot as inline SVG: values[i] at step i; a non-finite value breaks the line.
// fixed_range: y axis [lo, hi] as given; otherwise fitted to the values with whole ticks.
std::string svg_plot(const std::vector<float>& values, const std::string& title, const std::string& ylabel,
                     const char* colour, bool fixed_range, double lo, double hi) {
  const int W = 500, H = 240, ml = 62, mr = 16, mt = 30, mb = 44;
  const int pw = W - ml - mr, ph = H - mt - mb;
  if (!fixed_range) {
    lo = INFINITY;
    hi = -INFINITY;
    for (float v : values)
      if (std::isfinite(v)) {
        lo = std::min(lo, static_cast<double>(v));
        hi = std::max(hi, static_cast<double>(v));
      }
    if (!(lo <= hi)) {
      lo = 0;
      hi = 1;
    } else if (hi - lo <= 1e-9 * std::max(1.0, std::fabs(hi))) {
      const double pad = std::max(std::fabs(hi) * 0.1, 1e-3);
      lo -= pad;
      hi += pad;
    } else {
      const bool nonneg = lo >= 0;
      lo -= (hi - lo) * 0.05;
      hi += (hi - lo) * 0.05;
      if (nonneg) lo = std::max(lo, 0.0);
    }
    const std::vector<double> t = nice_ticks(lo, hi, 5);
    if (t.size() >= 2) {
      const double st = t[1] - t[0];
      if (t.front() - lo > 1e-9 * st) lo = t.front() - st;
      if (hi - t.back() > 1e-9 * st) hi = t.back() + st;
    }
  }
  const double x_end = std::max<double>(1, static_cast<double>(values.size()) - 1);
  auto X = [&](double v) { return ml + v / x_end * pw; };
  auto Y = [&](double v) { return mt + ph - (v - lo) / (hi - lo) * ph; };
  std::string s = cat("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", W, "\" height=\"", H, "\" viewBox=\"0 0 ",
                      W, " ", H, "\" role=\"img\" aria-label=\"", html_escape(title), "\">\n");
  s += cat("<rect width=\"", W, "\" height=\"", H, "\" fill=\"#fff\"/>\n");
  s += cat("<text x=\"", ml, "\" y=\"18\" font-size=\"14\" font-weight=\"bold\">", html_escape(title), "</text>\n");
  const std::vector<double> xt = nice_ticks(0, x_end, 8), yt = nice_ticks(lo, hi, 6);
  const double xs = xt.size() > 1 ? xt[1] - xt[0] : 1, ys = yt.size() > 1 ? yt[1] - yt[0] : 1;
  for (double v : yt) {
    s += cat("<line x1=\"", ml, "\" x2=\"", ml + pw, "\" y1=\"", format_number("%.1f", Y(v)), "\" y2=\"", format_number("%.1f", Y(v)),
             "\" stroke=\"#e8e8e8\"/>");
    s += cat("<text x=\"", ml - 6, "\" y=\"", format_number("%.1f", Y(v) + 4), "\" font-size=\"11\" text-anchor=\"end\">",
             format_tick(v, ys), "</text>\n");
  }
  for (double v : xt) {
    s += cat("<line x1=\"", format_number("%.1f", X(v)), "\" x2=\"", format_number("%.1f", X(v)), "\" y1=\"", mt, "\" y2=\"", mt + ph,
             "\" stroke=\"#e8e8e8\"/>");
    s += cat("<text x=\"", format_number("%.1f", X(v)), "\" y=\"", mt + ph + 16, "\" font-size=\"11\" text-anchor=\"middle\">",
             format_tick(v, xs), "</text>\n");
  }
  s += cat("<path d=\"M", ml, " ", mt, "V", mt + ph, "H", ml + pw, "\" fill=\"none\" stroke=\"#555\"/>\n");
  s += cat("<text x=\"", ml + pw / 2, "\" y=\"", H - 6, "\" font-size=\"12\" fill=\"#555\" text-anchor=\"middle\">step</text>\n");
  s += cat("<text transform=\"translate(16 ", mt + ph / 2, ") rotate(-90)\" font-size=\"12\" fill=\"#555\" "
           "text-anchor=\"middle\">", html_escape(ylabel), "</text>\n");
  std::string d;
  bool open = false;
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      open = false;
      continue;
    }
    d += cat(open ? "L" : "M", format_number("%.2f", X(i)), " ", format_number("%.2f", Y(values[i])));
    open = true;
  }
  if (!d.empty())
    s += cat("<path d=\"", d, "\" fill=\"none\" stroke=\"", colour,
             "\" stroke-width=\"2\" stroke-linejoin=\"round\"/>\n");
  if (values.empty())
    s += cat("<text x=\"", ml + pw / 2, "\" y=\"", mt + ph / 2, "\" font-size=\"12\" fill=\"#777\" "
             "text-anchor=\"middle\">no values recorded</text>\n");
  s += "</svg>\n";
  return s;
}

std::string top_table(const std::string& caption, const std::vector<ReportClass>& top, int target) {
  std::string s = cat("<table class=\"top\"><caption style=\"text-align:left;font-weight:bold;padding-bottom:4px\">",
                      html_escape(caption), "</caption>\n<tr><th>#</th><th>class</th><th>probability</th></tr>\n");
  for (size_t i = 0; i < top.size(); ++i) {
    s += cat("<tr", top[i].index == target && target >= 0 ? " class=\"target\"" : "", "><td>", i + 1, "</td><td>",
             html_escape(class_text(top[i])), "</td><td class=\"p\">", format_percent(top[i].prob), "</td></tr>\n");
  }
  if (top.empty()) s += "<tr><td colspan=\"3\">not recorded</td></tr>\n";
  return s + "</table>\n";
}

}  // namespace

std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string url_path_escape(const std::string& s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '.' || c == '_' || c == '~' || c == '/' || c == '-') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string report_html(const ReportInfo& r) {
  const std::string target = class_text(r.target);
  const std::string title = r.title.empty() ? cat(r.input_name.empty() ? "image" : r.input_name, " \u2192 ", target)
                                            : r.title;
  std::string s;
  s += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  s += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  s += cat("<title>", html_escape(title), "</title>\n<style>", kStyle, "</style>\n</head>\n<body>\n");
  s += cat("<h1>", html_escape(title), "</h1>\n");

  // Verdict: the 8-bit result is what the saved PNG does, so it decides the colour.
  std::string final_top1 = r.top5_final.empty() ? std::string("unknown") : class_text(r.top5_final[0]);
  if (r.success && r.success_8bit)
    s += cat("<p class=\"verdict ok\">Success: the model now says <b>", html_escape(target),
             "</b>, also after rounding to 8-bit pixels (what adversarial.png holds).</p>\n");
  else if (r.success)
    s += cat("<p class=\"verdict partial\">Target <b>", html_escape(target),
             "</b> reached on the floating-point image, but <b>not</b> after rounding to 8-bit pixels.</p>\n");
  else if (r.success_8bit)
    s += cat("<p class=\"verdict partial\">Target <b>", html_escape(target),
             "</b> not reached on the floating-point image, but reached after rounding to 8-bit pixels.</p>\n");
  else
    s += cat("<p class=\"verdict bad\">Target <b>", html_escape(target), "</b> not reached after ", r.steps,
             " steps; the model says <b>", html_escape(final_top1), "</b>.</p>\n");

  auto figure = [&](const std::string& file, const std::string& alt, const std::string& caption, bool image_sized) {
    if (file.empty()) return std::string();
    const bool small = image_sized && r.image_width > 0 && r.image_height > 0 &&
                       std::max(r.image_width, r.image_height) < 160;
    std::string size;
    if (small) {
      const int k = (256 + std::max(r.image_width, r.image_height) - 1) / std::max(r.image_width, r.image_height);
      size = cat(" width=\"", r.image_width * k, "\" height=\"", r.image_height * k, "\"");
    }
    return cat("<figure><img src=\"", html_escape(url_path_escape(file)), "\" alt=\"", html_escape(alt), "\"",
               small ? " class=\"pixelated\"" : "", size, "><figcaption>", caption, "</figcaption></figure>\n");
  };
  s += "<div class=\"pics\">\n";
  s += figure(r.original_png, "original image",
              r.top5_original.empty() ? "original"
                                      : cat("original: ", html_escape(class_text(r.top5_original[0])), " ",
                                            format_percent(r.top5_original[0].prob)),
              true);
  s += figure(r.adversarial_png, "adversarial image",
              r.top5_final.empty() ? "adversarial"
                                   : cat("adversarial: ", html_escape(final_top1), " ", format_percent(r.top5_final[0].prob)),
              true);
  s += figure(r.perturbation_png, "perturbation",
              r.perturbation_scale_255 > 0
                  ? cat("perturbation (adversarial \u2212 original): \u00b1", format_levels(r.perturbation_scale_255),
                        "/255 mapped to full colour, grey = unchanged")
                  : std::string("perturbation: none (the images are equal)"),
              false);
  s += "</div>\n";
  if (!r.animation.empty())
    s += cat("<h2>Animation</h2>\n<img class=\"anim\" src=\"", html_escape(url_path_escape(r.animation)),
             "\" alt=\"the attack, step by step\">\n");

  s += "<h2>Summary</h2>\n<table class=\"kv\">\n";
  auto row = [&](const std::string& k, const std::string& v_html) {
    s += cat("<tr><th>", html_escape(k), "</th><td>", v_html, "</td></tr>\n");
  };
  if (!r.input_name.empty()) row("input", html_escape(r.input_name));
  if (r.image_width > 0) row("image size", cat(r.image_width, " \u00d7 ", r.image_height));
  row("model", html_escape(r.model));
  if (!r.weights_hash.empty()) row("weights", cat("<code>", html_escape(r.weights_hash), "</code>"));
  row("method", html_escape(r.method));
  for (const auto& [k, v] : r.settings) row(k, html_escape(v));
  row("target", html_escape(target));
  row("reached (float image)", r.success ? "yes" : "no");
  row("reached (8-bit image)", r.success_8bit ? "yes" : "no");
  row("steps", r.max_steps > 0 ? cat(r.steps, " of ", r.max_steps) : cat(r.steps));
  row("L\u221e of the perturbation", cat(format_levels(r.linf_255), "/255"));
  row("L2 of the perturbation", cat(format_number("%.1f", r.l2_255), "/255"));
  row("wall time", format_number("%.2f s", r.wall_seconds));
  if (!r.device.empty()) row("device", html_escape(r.device));
  s += "</table>\n";

  s += "<h2>Top-5</h2>\n<div class=\"tops\">\n";
  s += top_table("original", r.top5_original, r.target.index);
  s += top_table("adversarial", r.top5_final, r.target.index);
  s += "</div>\n";

  s += "<h2>Per step</h2>\n<div class=\"plots\">\n";
  s += svg_plot(r.target_prob_history, cat("probability of ", target), "probability", "#d62728", true, 0, 1);
  s += svg_plot(r.loss_history, "loss", "loss", "#6a3d9a", false, 0, 0);
  s += "</div>\n";
  if (!r.generated_by.empty()) s += cat("<footer>", html_escape(r.generated_by), "</footer>\n");
  s += "</body>\n</html>\n";
  return s;
}

void write_report(const std::string& path, const ReportInfo& info) { atomic_write(path, report_html(info)); }

}  // namespace trick
