// The attack's four-panel animation frame, after the 2016 article "Tricking Deep Learning":
//   upper left   the current image (pixels kept crisp when a small image is enlarged)
//   upper right  its change from the previous step, amplified, grey = no change
//   lower left   predicted probability against class index, the target's one-hot in red
//   lower right  the loss so far, on an x axis fixed to the whole step budget
// Plain data in, pixels out: nothing here knows about the attack, so the attack, a replay
// from a trace file and the tests all draw through the same function.
#pragma once
#include <string>
#include <vector>

#include "tensor/tensor.h"
#include "tools/lib/colormap.h"
#include "tools/lib/rgb8_image.h"

namespace trick {

struct FrameInfo {
  int step = 0;          // steps taken so far (0: the original image)
  int total_steps = 0;   // the step budget: fixes the loss plot's x range for every frame
  Tensor image;          // (H, W, C) current image, pixels in [0, 1], C = 1 or 3
  Tensor delta;          // (H, W, C) image minus the previous step's image, signed; undefined at step 0
  std::vector<float> probs;         // (K) predicted probability of every class
  int target = -1;                  // target class (-1: none, no one-hot curve drawn)
  int top1 = -1;                    // predicted class (-1: the argmax of probs)
  std::string target_label;         // short class names ("" -> "class N")
  std::string top1_label;
  float target_prob = -1.f;         // (< 0 -> read from probs)
  float top1_prob = -1.f;
  std::vector<float> loss_history;  // loss_history[i]: the loss at step i (i = 0 .. step)
  std::string loss_name = "loss";   // e.g. "cross-entropy to target"
  std::string method;               // e.g. "I-FGSM", for the title
  float epsilon_255 = 0.f;          // L-inf budget in 8-bit levels (<= 0: unconstrained)
  float linf_255 = 0.f;             // ||image - original||_inf in 8-bit levels
  float l2_255 = 0.f;               // ||image - original||_2 in 8-bit levels
};

struct RenderOptions {
  int width = 960;   // frame size in pixels, 480x360 .. 8192x8192; text and margins scale with it
  int height = 720;
  // |delta| drawn at full colour, in 8-bit levels. 0: each frame's own largest |delta|. A
  // fixed value (e.g. the step size) keeps the colours comparable from frame to frame.
  float delta_scale_255 = 0.f;
  DeltaStyle delta_style = DeltaStyle::kAuto;
};

struct PixelRect {
  int x = 0, y = 0, w = 0, h = 0;
};

// Where render_frame draws (pixels from the top left), for callers and tests.
struct FrameLayout {
  PixelRect image;      // the scaled image
  PixelRect delta;      // the scaled delta, same size as `image`
  double image_scale = 1;  // displayed pixels per image pixel (an integer when enlarging)
  PixelRect prob_plot;  // class 0 at x, class K-1 at x + w; probability 0 at y + h, 1 at y
  PixelRect loss_plot;  // step 0 at x, the x-range end at x + w
  int loss_x_end = 1;   // the loss axis' last step: max(total_steps, step, 1)
};

// Throws trick::Error ("render_frame: ...") on inconsistent input.
FrameLayout frame_layout(const FrameInfo& info, const RenderOptions& opt = {});
Rgb8Image render_frame(const FrameInfo& info, const RenderOptions& opt = {});

// perturbation.png: delta = adversarial - original, (H, W, C). The largest |delta| maps to full
// colour; *scale_out (if given) receives that value in 8-bit levels, so the caller can say
// "+-3/255 mapped to full colour" (0 when the images are equal: all grey). Images smaller
// than min_size on their longer side are enlarged by an integer factor, nearest neighbour.
Rgb8Image render_perturbation(const Tensor& delta, float* scale_out = nullptr,
                              DeltaStyle style = DeltaStyle::kAuto, int min_size = 256);

// Tick positions for an axis over [lo, hi]: multiples of a step of 1, 2 or 5 x 10^k chosen so
// that there are about max_count of them (at most max_count + 1).
std::vector<double> nice_ticks(double lo, double hi, int max_count);

}  // namespace trick
