// index.html for one attack: a self-contained, offline page (inline CSS and SVG, no scripts,
// no external resources) that shows what was attacked, with which settings, whether it
// worked (also after rounding to 8-bit pixels), the top-5 before and after, and per-step plots
// of the target's probability and the loss. Images are referenced by relative file name, so
// the output folder can be moved or zipped as a whole.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace trick {

struct ReportClass {
  int index = -1;
  std::string label;
  float prob = 0.f;
};

struct ReportInfo {
  std::string title;         // page heading; "" -> "<input> → <target>"
  std::string input_name;    // the attacked image file
  int image_width = 0;       // its size (0: unknown); small images are shown enlarged, pixelated
  int image_height = 0;
  std::string model;         // e.g. "inception_v3 (torchvision, Google weights)"
  std::string weights_hash;  // e.g. the weight file's SHA-256
  std::string method;        // e.g. "I-FGSM"
  std::vector<std::pair<std::string, std::string>> settings;  // (name, value) rows, in order
  ReportClass target;
  bool success = false;       // the target is top-1 for the float image
  bool success_8bit = false;  // ... and still after rounding to 8-bit pixels (what the PNG holds)
  int steps = 0;              // steps taken
  int max_steps = 0;          // the budget (0: not shown)
  float linf_255 = 0.f;       // ||adversarial - original||_inf, 8-bit levels
  float l2_255 = 0.f;         // ||adversarial - original||_2, 8-bit levels
  double wall_seconds = 0;
  std::string device;         // e.g. "cuda:0"
  std::vector<ReportClass> top5_original, top5_final;
  std::vector<float> target_prob_history;  // per step, step 0 = original image
  std::vector<float> loss_history;         // per step
  float perturbation_scale_255 = 0.f;      // |delta| shown at full colour in perturbation.png
  // Relative file names next to index.html; "" leaves that picture out.
  std::string original_png = "original.png";
  std::string adversarial_png = "adversarial.png";
  std::string perturbation_png = "perturbation.png";
  std::string animation = "animation.gif";
  std::string generated_by;  // e.g. "trick 0.1.0" and the command line
};

// The page as a string (for tests); write_report writes it atomically to `path`.
std::string report_html(const ReportInfo& info);
void write_report(const std::string& path, const ReportInfo& info);

// & < > " ' escaped, so any string is safe in text and in quoted attributes.
std::string html_escape(const std::string& s);

// A file name as a relative URL: characters outside [A-Za-z0-9._~/-] percent-encoded, so
// "my image#1.png" is not read as a fragment. The result still needs html_escape in HTML.
std::string url_path_escape(const std::string& s);

}  // namespace trick
