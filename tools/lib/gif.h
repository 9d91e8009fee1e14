// Animated GIF output for the attack's frames (giflib), streamed: frames are quantised and
// written as they come, so a long run never holds the whole animation in memory.
//
// Palette: one adaptive palette of up to 256 colours per frame. Colours covering >= 0.1% of
// the frame (background, text, axes, plot lines, the delta panel's saturated colours) get
// exact entries; median cut plus three k-means passes spend the rest on the photograph; each
// pixel takes the nearest entry. Why not the alternatives: a fixed palette (6x7x6 + greys)
// bands photographs and the amplified delta without dithering and speckles the flat plot
// colours with it; giflib's GifQuantizeBuffer (5-bit median cut, entries at cell corners, so
// white comes out 248) measured mean/99th-percentile errors of 0.74/17 levels on the demo
// frames against 0.32/6 for this, and 9 vs 0.04 on a delta panel of sign steps.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "tools/lib/rgb8_image.h"

namespace trick {

struct GifOptions {
  int delay_cs = 10;        // each frame's display time, in hundredths of a second
  int last_delay_cs = 300;  // the final frame's, so the result can be seen before the loop restarts
  int loop_count = 0;       // 0: loop forever
};

// Usage: GifWriter gif(path, w, h); gif.add_frame(f) ...; gif.finish();
// The file appears (atomically, by rename) only in finish(); a writer destroyed before that,
// or after an error, leaves neither the file nor a temporary behind.
class GifWriter {
 public:
  GifWriter(const std::string& path, int width, int height, GifOptions opt = {});
  ~GifWriter();
  GifWriter(const GifWriter&) = delete;
  GifWriter& operator=(const GifWriter&) = delete;

  // frame must be width x height. delay_cs < 0: opt.delay_cs. The newest frame is held back
  // until the next add_frame or finish(), which is how the last one gets last_delay_cs.
  void add_frame(const Rgb8Image& frame, int delay_cs = -1);
  void finish();  // throws if no frame was added
  int frames_added() const;
  const std::string& path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The steps to draw when a run is too long to animate every one: indices into 0 .. steps
// (step 0 = the original image, `steps` = the final one), evenly spaced, sorted, distinct,
// always including 0 and `steps`; min(steps + 1, max_frames) of them. max_frames >= 2.
std::vector<int> pick_frames(int steps, int max_frames);
// For a run that may stop early (an attack stops when it reaches its target, often long
// before its step budget): every step while the first half of the frames last, then the other
// half evenly over the rest of the budget. Same guarantees as pick_frames: sorted, distinct,
// 0 and `steps` included, min(steps + 1, max_frames) of them.
std::vector<int> pick_frames_front(int steps, int max_frames);

// An 8-bit palette for one frame (<= 256 colours, exact when the frame has no more than
// that) and each pixel's index into it. Exposed for tests and other writers.
struct PalettedImage {
  int width = 0, height = 0;
  std::vector<uint8_t> palette;  // (colours, 3) RGB
  std::vector<uint8_t> indices;  // (height, width)
};
PalettedImage quantize_frame(const Rgb8Image& frame);

}  // namespace trick
