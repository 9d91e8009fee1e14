// The attack's pictures: the four-panel frame, perturbation.png, the animated GIF and
// index.html. Frames are checked by what a reader would see in them (the image's pixels in
// the image panel, grey where nothing changed, the red target curve at the target's class),
// the GIF by decoding it again with giflib, the page by its escaped text and values.
#include <dirent.h>
#include <doctest/doctest.h>
#include <gif_lib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "tensor/random.h"
#include "tools/lib/gif.h"
#include "tools/lib/image.h"
#include "tools/lib/number_format.h"
#include "tools/lib/render.h"
#include "tools/lib/report.h"

namespace test_render {

using namespace trick;

namespace {

// A fresh folder per test under /tmp, removed (with its files) at the end.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/trick_render_XXXXXX";
    const char* p = mkdtemp(tmpl);
    REQUIRE(p != nullptr);
    path = p;
  }
  ~TempDir() {
    for (const std::string& f : files()) std::remove((path + "/" + f).c_str());
    rmdir(path.c_str());
  }
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    if (DIR* d = opendir(path.c_str())) {
      while (dirent* e = readdir(d))
        if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") out.push_back(e->d_name);
      closedir(d);
    }
    std::sort(out.begin(), out.end());
    return out;
  }
};

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

uint8_t level(float v) { return static_cast<uint8_t>(std::lround(std::clamp(v, 0.f, 1.f) * 255.f)); }

// A frame description with a random image, softmax-like probabilities, and a loss curve.
FrameInfo make_info(int h, int w, int c, int classes, int target, int top1, uint64_t seed) {
  Rng rng(seed);
  FrameInfo f;
  f.step = 12;
  f.total_steps = 50;
  f.image = rand_uniform({h, w, c}, rng);
  f.probs.assign(classes, 0.f);
  float rest = 0.f;
  for (int k = 0; k < classes; ++k) rest += (f.probs[k] = static_cast<float>(rng.uniform()) * 0.01f);
  for (float& p : f.probs) p *= 0.3f / rest;
  f.probs[top1] += 0.7f;
  f.target = target;
  f.target_label = "hog";
  f.top1_label = "tabby";
  for (int i = 0; i <= f.step; ++i) f.loss_history.push_back(8.f - 0.5f * i + static_cast<float>(rng.uniform()));
  f.method = "I-FGSM";
  f.epsilon_255 = 8;
  f.linf_255 = 8;
  f.l2_255 = 123.4f;
  return f;
}

bool is_red(const uint8_t* p) { return p[0] > 150 && p[1] < 110 && p[2] < 110 && p[0] > p[1] + 60; }
bool is_blue(const uint8_t* p) { return p[2] > 120 && p[0] < 100 && p[2] > p[0] + 60; }

// Counts red pixels in column x +- 1 between rows y0 and y1.
int red_rows(const Rgb8Image& img, int x, int y0, int y1) {
  int n = 0;
  for (int y = y0; y <= y1; ++y) {
    bool red = false;
    for (int dx = -1; dx <= 1; ++dx) red = red || is_red(img.at(x + dx, y));
    n += red;
  }
  return n;
}

}  // namespace

TEST_CASE("render: frame has the requested size and four panels in their quadrants") {
  const FrameInfo f = make_info(28, 28, 1, 10, 8, 1, 1);
  for (auto [w, h] : {std::pair<int, int>{960, 720}, {640, 480}, {1280, 720}}) {
    RenderOptions opt;
    opt.width = w;
    opt.height = h;
    const Rgb8Image img = render_frame(f, opt);
    CHECK(img.width == w);
    CHECK(img.height == h);
    CHECK(img.pixels.size() == static_cast<size_t>(w) * h * 3);
    const FrameLayout L = frame_layout(f, opt);
    // Image upper left, delta upper right, probabilities lower left, loss lower right.
    CHECK(L.image.x >= 0);
    CHECK(L.image.x + L.image.w <= w / 2);
    CHECK(L.delta.x >= w / 2);
    CHECK(L.delta.x + L.delta.w <= w);
    CHECK(L.image.y + L.image.h <= h / 2 + 20);
    CHECK(L.prob_plot.x + L.prob_plot.w <= w / 2);
    CHECK(L.prob_plot.y >= h / 2 - 20);
    CHECK(L.loss_plot.x >= w / 2);
    CHECK(L.prob_plot.y + L.prob_plot.h < h);
    // Panels are used, not postage stamps.
    CHECK(L.image.h > h / 4);
    CHECK(L.prob_plot.w > w / 3);
    CHECK(L.prob_plot.h > h / 5);
  }
}

TEST_CASE("render: a small image is enlarged by a whole factor and its pixels are kept exactly") {
  for (int c : {1, 3}) {
    CAPTURE(c);
    const FrameInfo f = make_info(28, 28, c, 10, 8, 1, 2 + c);
    const FrameLayout L = frame_layout(f);
    REQUIRE(L.image_scale >= 2);
    CHECK(L.image_scale == std::floor(L.image_scale));
    const int s = static_cast<int>(L.image_scale);
    CHECK(L.image.w == 28 * s);
    CHECK(L.image.h == 28 * s);
    const Rgb8Image img = render_frame(f);
    const std::vector<float> v = f.image.to_vector();
    Rng rng(99);
    int checked = 0;
    for (int n = 0; n < 60; ++n) {
      const int i = static_cast<int>(rng.below(28)), j = static_cast<int>(rng.below(28));
      // Every displayed pixel of the enlarged cell, corners included (nearest neighbour).
      for (int dy : {0, s / 2, s - 1})
        for (int dx : {0, s / 2, s - 1}) {
          const uint8_t* p = img.at(L.image.x + j * s + dx, L.image.y + i * s + dy);
          for (int k = 0; k < 3; ++k) {
            const float ref = v[(i * 28 + j) * c + (c == 3 ? k : 0)];
            if (p[k] != level(ref)) {
              CAPTURE(i);
              CAPTURE(j);
              CAPTURE(k);
              CHECK(static_cast<int>(p[k]) == static_cast<int>(level(ref)));
            }
            ++checked;
          }
        }
    }
    CHECK(checked == 60 * 9 * 3);
  }
}

TEST_CASE("render: a large image is shrunk to fit its panel, preserving aspect and colour") {
  // A 900x600 (W x H) image with a flat left half and a flat right half.
  const int h = 600, w = 900;
  std::vector<float> v(static_cast<size_t>(h) * w * 3);
  const float left[3] = {0.9f, 0.2f, 0.1f}, right[3] = {0.1f, 0.3f, 0.8f};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < 3; ++k) v[(static_cast<size_t>(y) * w + x) * 3 + k] = x < w / 2 ? left[k] : right[k];
  FrameInfo f = make_info(4, 4, 3, 10, 8, 1, 5);
  f.image = Tensor::from_vector({h, w, 3}, v);
  const FrameLayout L = frame_layout(f);
  CHECK(L.image_scale < 1);
  CHECK(std::abs(static_cast<double>(L.image.w) / L.image.h - 1.5) < 0.02);
  const Rgb8Image img = render_frame(f);
  // Away from the middle edge, each half shows its colour within one level.
  for (int yy : {L.image.y + 2, L.image.y + L.image.h / 2, L.image.y + L.image.h - 3})
    for (int xx : {L.image.x + 2, L.image.x + L.image.w / 4, L.image.x + L.image.w * 3 / 4, L.image.x + L.image.w - 3}) {
      const float* ref = xx < L.image.x + L.image.w / 2 ? left : right;
      for (int k = 0; k < 3; ++k) CHECK(std::abs(img.at(xx, yy)[k] - level(ref[k])) <= 1);
    }
}

TEST_CASE("render: the delta panel is grey where nothing changed and coloured where it did") {
  for (int c : {1, 3}) {
    CAPTURE(c);
    FrameInfo f = make_info(20, 20, c, 10, 8, 1, 7);
    // Left half unchanged; right half +2/255 in the top rows, -2/255 in the bottom rows.
    std::vector<float> d(20 * 20 * c, 0.f);
    for (int y = 0; y < 20; ++y)
      for (int x = 10; x < 20; ++x)
        for (int k = 0; k < c; ++k) d[(y * 20 + x) * c + k] = (y < 10 ? 2.f : -2.f) / 255.f;
    f.delta = Tensor::from_vector({20, 20, c}, d);
    const FrameLayout L = frame_layout(f);
    const Rgb8Image img = render_frame(f);
    const int s = static_cast<int>(L.image_scale);
    REQUIRE(s >= 2);
    int grey = 0, pos = 0, neg = 0;
    for (int y = 0; y < 20; ++y)
      for (int x = 0; x < 20; ++x) {
        const uint8_t* p = img.at(L.delta.x + x * s + s / 2, L.delta.y + y * s + s / 2);
        if (x < 10) {
          grey += p[0] == 128 && p[1] == 128 && p[2] == 128;
        } else if (y < 10) {  // an increase: brighter (per channel) or red (diverging)
          pos += c == 3 ? (p[0] == 255 && p[1] == 255 && p[2] == 255) : (p[0] > 200 && p[2] < 80);
        } else {
          neg += c == 3 ? (p[0] == 0 && p[1] == 0 && p[2] == 0) : (p[2] > 200 && p[0] < 80);
        }
      }
    CHECK(grey == 200);
    CHECK(pos == 100);
    CHECK(neg == 100);
  }
  // Step 0 (no delta) and an all-zero delta: the whole panel is grey.
  FrameInfo f0 = make_info(20, 20, 3, 10, 8, 1, 8);
  f0.step = 0;
  for (bool zero : {false, true}) {
    if (zero) f0.delta = Tensor::zeros({20, 20, 3});
    const FrameLayout L = frame_layout(f0);
    const Rgb8Image img = render_frame(f0);
    int grey = 0;
    for (int y = L.delta.y; y < L.delta.y + L.delta.h; y += 3)
      for (int x = L.delta.x; x < L.delta.x + L.delta.w; x += 3) {
        const uint8_t* p = img.at(x, y);
        grey += p[0] == 128 && p[1] == 128 && p[2] == 128;
      }
    CHECK(grey == ((L.delta.h + 2) / 3) * ((L.delta.w + 2) / 3));
  }
}

TEST_CASE("render: the target's one-hot curve is red at the target's class, the prediction blue at the top-1") {
  for (auto [K, target, top1] : {std::tuple<int, int, int>{1000, 341, 281}, {10, 8, 1}, {1000, 0, 999}}) {
    CAPTURE(K);
    CAPTURE(target);
    const FrameInfo f = make_info(28, 28, 3, K, target, top1, 11);
    const FrameLayout L = frame_layout(f);
    const Rgb8Image img = render_frame(f);
    const PixelRect& r = L.prob_plot;
    auto X = [&](int k) { return static_cast<int>(std::lround(r.x + static_cast<double>(k) / (K - 1) * r.w)); };
    // The one-hot curve rises from 0 at the neighbouring classes to 1 at the target: red
    // along both flanks (for 1000 classes they are nearly vertical, a spike over the whole height).
    auto Y = [&](double p) { return r.y + r.h - p * r.h; };
    int red = 0, samples = 0;
    for (int side : {-1, 1}) {
      if (target + side < 0 || target + side >= K) continue;
      for (int i = 1; i < 20; ++i) {
        const double t = i / 20.0;  // from the target (t = 0) towards the neighbour
        const double x = X(target) + t * (X(target + side) - X(target)), y = Y(1 - t);
        bool hit = false;
        for (int dy = -1; dy <= 1; ++dy)
          hit = hit || red_rows(img, static_cast<int>(std::lround(x)), static_cast<int>(std::lround(y)) + dy,
                                static_cast<int>(std::lround(y)) + dy) > 0;
        red += hit;
        ++samples;
      }
    }
    CHECK(samples >= 19);
    CHECK(red >= samples - 1);  // the blue top-1 marker may cover one sample
    if (K >= 100) CHECK(red_rows(img, X(target), r.y + 4, r.y + r.h - 4) >= (r.h - 8) * 9 / 10);
    // A class far from both: no red above the baseline (the one-hot is 0 there).
    const int far = (target + K / 2) % K == top1 ? (target + K / 3) % K : (target + K / 2) % K;
    if (K >= 100) CHECK(red_rows(img, X(far), r.y + 4, r.y + r.h - 6) == 0);
    // The prediction's peak at the top-1 class: blue at about its probability's height.
    const int yp = static_cast<int>(std::lround(r.y + r.h - f.probs[top1] * r.h));
    int blue = 0;
    for (int y = yp - 3; y <= yp + 3; ++y)
      for (int dx = -3; dx <= 3; ++dx) blue += is_blue(img.at(X(top1) + dx, y));
    CHECK(blue >= 3);
  }
}

TEST_CASE("render: the loss axis spans the whole step budget, the curve stops at the current step") {
  FrameInfo f = make_info(28, 28, 1, 10, 8, 1, 12);
  f.step = 10;
  f.total_steps = 100;
  f.loss_history.clear();
  for (int i = 0; i <= 10; ++i) f.loss_history.push_back(5.f - 0.3f * i);
  const FrameLayout L = frame_layout(f);
  CHECK(L.loss_x_end == 100);
  const Rgb8Image img = render_frame(f);
  const PixelRect& r = L.loss_plot;
  auto purple = [&](int x, int y) {
    const uint8_t* p = img.at(x, y);
    return p[2] > 110 && p[0] > 70 && p[1] < 100 && p[2] > p[1] + 40;
  };
  auto column_has = [&](int x) {
    for (int y = r.y; y <= r.y + r.h; ++y)
      if (purple(x, y)) return true;
    return false;
  };
  const double x_step = r.w / 100.0;
  for (int i : {1, 3, 5, 7, 9}) CHECK(column_has(static_cast<int>(r.x + i * x_step)));
  for (int i : {20, 50, 99}) CHECK_FALSE(column_has(static_cast<int>(r.x + i * x_step)));
  // The first value (5.0) and the last (2.0) lie inside the y range: the curve's ends are in the plot.
  CHECK(column_has(r.x + 1));
}

TEST_CASE("render: non-finite numbers and long labels still give a complete frame") {
  FrameInfo f = make_info(30, 40, 3, 1000, 341, 281, 30);
  f.probs[5] = NAN;
  f.probs[6] = INFINITY;
  f.loss_history = {NAN, 3.f, INFINITY, 2.f, -INFINITY, 1.5f};
  f.step = 5;
  std::vector<float> img = f.image.to_vector();
  img[0] = NAN;
  f.image = Tensor::from_vector({30, 40, 3}, img);
  f.delta = Tensor::full({30, 40, 3}, NAN);
  std::string long_label;
  for (int i = 0; i < 80; ++i) long_label += "éléphant ";
  f.target_label = f.top1_label = f.method = long_label;
  const Rgb8Image a = render_frame(f);
  CHECK(a.width == 960);
  // The NaN value (red of the first pixel) is drawn as 0, the NaN delta as "no change" grey.
  const FrameLayout L = frame_layout(f);
  const uint8_t* p = a.at(L.image.x, L.image.y);
  CHECK(p[0] == 0);
  p = a.at(L.delta.x + L.delta.w / 2, L.delta.y + L.delta.h / 2);
  CHECK((p[0] == 128 && p[1] == 128 && p[2] == 128));
  // All losses non-finite, no losses, one class, a zero budget: no exception.
  f.loss_history = {NAN, NAN};
  CHECK_NOTHROW(render_frame(f));
  f.loss_history.clear();
  f.total_steps = 0;
  f.step = 0;
  CHECK_NOTHROW(render_frame(f));
  f.probs = {1.f};
  f.target = 0;
  f.top1 = -1;
  CHECK_NOTHROW(render_frame(f));
}

TEST_CASE("render: inconsistent frame input is rejected with a clear error") {
  const FrameInfo good = make_info(8, 8, 3, 10, 8, 1, 13);
  CHECK_NOTHROW(render_frame(good));
  auto fails = [](FrameInfo f, RenderOptions opt, const char* needle) {
    try {
      render_frame(f, opt);
      FAIL("no error for ", needle);
    } catch (const Error& e) {
      CHECK_MESSAGE(std::string(e.what()).find(needle) != std::string::npos, e.what());
    }
  };
  FrameInfo f = good;
  f.image = Tensor::zeros({8, 8, 2});
  fails(f, {}, "channels");
  f = good;
  f.image = Tensor();
  fails(f, {}, "image");
  f = good;
  f.delta = Tensor::zeros({8, 9, 3});
  fails(f, {}, "delta");
  f = good;
  f.target = 10;
  fails(f, {}, "target 10");
  f = good;
  f.probs.clear();
  fails(f, {}, "probabilities");
  RenderOptions tiny;
  tiny.width = 100;
  fails(good, tiny, "frame size");
}

TEST_CASE("render: perturbation.png maps the largest |delta| to full colour and reports the scale") {
  // (28, 28, 3): zero except one pixel +3/255 in red and one -1.5/255 in green.
  std::vector<float> d(28 * 28 * 3, 0.f);
  d[(5 * 28 + 7) * 3 + 0] = 3.f / 255;
  d[(20 * 28 + 2) * 3 + 1] = -1.5f / 255;
  float scale = -1;
  const Rgb8Image img = render_perturbation(Tensor::from_vector({28, 28, 3}, d), &scale);
  CHECK(scale == doctest::Approx(3.0).epsilon(1e-5));
  const int s = 10;  // ceil(256 / 28): enlarged to at least 256 pixels
  CHECK(img.width == 28 * s);
  CHECK(img.height == 28 * s);
  auto px = [&](int y, int x) { return img.at(x * s + s / 2, y * s + s / 2); };
  const uint8_t* p = px(5, 7);
  CHECK((p[0] == 255 && p[1] == 128 && p[2] == 128));  // +scale in red: red full on
  p = px(20, 2);
  CHECK((p[0] == 128 && p[1] == 64 && p[2] == 128));  // -scale/2 in green: halfway to 0
  p = px(0, 0);
  CHECK((p[0] == 128 && p[1] == 128 && p[2] == 128));  // unchanged: grey
  // Nearest enlargement: the whole cell has the pixel's colour.
  for (int dy = 0; dy < s; ++dy)
    for (int dx = 0; dx < s; ++dx) CHECK(img.at(7 * s + dx, 5 * s + dy)[0] == 255);
  // A big image is not enlarged; equal images give all grey and scale 0.
  const Rgb8Image big = render_perturbation(Tensor::zeros({300, 400, 1}), &scale);
  CHECK(big.width == 400);
  CHECK(big.height == 300);
  CHECK(scale == 0.f);
  CHECK(std::all_of(big.pixels.begin(), big.pixels.end(), [](uint8_t v) { return v == 128; }));
}

TEST_CASE("render: grey deltas use the diverging map: red for increases, blue for decreases") {
  uint8_t pos[3], neg[3], zero[3], half[3];
  diverging_color(1.f, pos);
  diverging_color(-1.f, neg);
  diverging_color(0.f, zero);
  diverging_color(0.5f, half);
  CHECK((zero[0] == 128 && zero[1] == 128 && zero[2] == 128));
  CHECK((pos[0] > 200 && pos[2] < 60));
  CHECK((neg[2] > 200 && neg[0] < 60));
  CHECK((half[0] > zero[0] && half[0] < pos[0]));  // monotone towards the end
  float scale = 0;
  std::vector<float> d = {0.f, 2.f / 255, -2.f / 255, 1.f / 255};
  const Rgb8Image img = render_perturbation(Tensor::from_vector({2, 2, 1}, d), &scale, DeltaStyle::kAuto, 0);
  CHECK(scale == doctest::Approx(2.0).epsilon(1e-5));
  CHECK(std::equal(img.at(0, 0), img.at(0, 0) + 3, zero));
  CHECK(std::equal(img.at(1, 0), img.at(1, 0) + 3, pos));
  CHECK(std::equal(img.at(0, 1), img.at(0, 1) + 3, neg));
  CHECK(std::equal(img.at(1, 1), img.at(1, 1) + 3, half));
}

TEST_CASE("render: nice_ticks gives round, evenly spaced values inside the range") {
  auto t = nice_ticks(0, 9, 10);
  CHECK(t == std::vector<double>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  t = nice_ticks(0, 999, 10);
  CHECK(t.size() == 10);
  CHECK(t.front() == 0);
  CHECK(t.back() == doctest::Approx(900));
  for (auto [lo, hi, n] : {std::tuple<double, double, int>{0.013, 0.087, 5}, {-3.7, 12.2, 6}, {1e-4, 3e-4, 4}}) {
    t = nice_ticks(lo, hi, n);
    REQUIRE(t.size() >= 2);
    CHECK(static_cast<int>(t.size()) <= n + 1);
    const double step = t[1] - t[0];
    const double mant = step / std::pow(10.0, std::floor(std::log10(step) + 1e-9));
    CHECK((std::abs(mant - 1) < 1e-6 || std::abs(mant - 2) < 1e-6 || std::abs(mant - 5) < 1e-6));
    for (size_t i = 0; i < t.size(); ++i) {
      CHECK(t[i] >= lo - 1e-12);
      CHECK(t[i] <= hi + 1e-12);
      CHECK(std::abs(t[i] / step - std::round(t[i] / step)) < 1e-6);  // multiples of the step
      if (i) CHECK(t[i] - t[i - 1] == doctest::Approx(step));
    }
    CHECK(t.front() - lo < step);  // no tick missing at either end
    CHECK(hi - t.back() < step);
  }
  CHECK(nice_ticks(3, 3, 5) == std::vector<double>{3});
  // Their labels: decimals as the step needs, no "-0", no float noise.
  CHECK(format_tick(0.1 + 0.2, 0.1) == "0.3");
  CHECK(format_tick(-1e-17, 0.2) == "0.0");
  CHECK(format_tick(250, 50) == "250");
  CHECK(format_tick(0.025, 0.005) == "0.025");
  CHECK(format_tick(3e7, 1e7) == "3.0e+07");
  CHECK(format_percent(0.931f) == "93.1%");
  CHECK(format_percent(0.0000234f) == "0.0023%");
  CHECK(format_levels(8) == "8");
  CHECK(format_levels(2.5) == "2.5");
  CHECK(format_levels(123.44) == "123.4");
  CHECK(nice_ticks(NAN, 1, 5).empty());
}

TEST_CASE("render: GIF round trip through giflib: frames, size, loop, delays and colours") {
  TempDir dir;
  const std::string path = dir.path + "/anim.gif";
  // Three frames like an attack's (a smooth picture, sign-gradient steps of +-2/255), then a
  // worst case for any 256-colour palette: uniform random colours in both upper panels.
  std::vector<Rgb8Image> frames;
  for (int step : {0, 6, 12, 13}) {
    FrameInfo f = make_info(90, 120, 3, 1000, 341, 281, 20 + step);
    f.step = step;
    f.loss_history.resize(step + 1);
    Rng rng(step);
    if (step < 13) {
      std::vector<float> v(90 * 120 * 3);
      for (int y = 0; y < 90; ++y)
        for (int x = 0; x < 120; ++x) {
          const float r2 = (x - 70.f) * (x - 70.f) + (y - 40.f) * (y - 40.f);
          const float px[3] = {0.2f + 0.6f * y / 90, 0.5f - 0.3f * x / 120, r2 < 900 ? 0.1f : 0.9f - 0.5f * y / 90};
          for (int k = 0; k < 3; ++k) v[(y * 120 + x) * 3 + k] = px[k] + (step ? 0.01f * (rng.uniform() < 0.5 ? 1 : -1) : 0);
        }
      f.image = Tensor::from_vector({90, 120, 3}, v);
      if (step > 0) {
        std::vector<float> d(90 * 120 * 3);
        for (float& e : d) e = (rng.uniform() < 0.5 ? 2.f : -2.f) / 255;
        f.delta = Tensor::from_vector({90, 120, 3}, d);
      }
    } else {
      f.delta = rand_uniform({90, 120, 3}, rng, -2.f / 255, 2.f / 255);
    }
    frames.push_back(render_frame(f));
  }
  {
    GifOptions opt;
    opt.delay_cs = 7;
    opt.last_delay_cs = 250;
    GifWriter gif(path, 960, 720, opt);
    for (const Rgb8Image& fr : frames) gif.add_frame(fr);
    CHECK(gif.frames_added() == 4);
    // Not there until finish(): it appears whole or not at all.
    struct stat st;
    CHECK(stat(path.c_str(), &st) != 0);
    gif.finish();
  }
  CHECK(dir.files() == std::vector<std::string>{"anim.gif"});  // no temporary left

  int err = 0;
  GifFileType* g = DGifOpenFileName(path.c_str(), &err);
  REQUIRE(g != nullptr);
  REQUIRE(DGifSlurp(g) == GIF_OK);
  CHECK(g->ImageCount == 4);
  CHECK(g->SWidth == 960);
  CHECK(g->SHeight == 720);
  // The NETSCAPE2.0 loop block (0 = forever) comes before the first image.
  bool loop_found = false;
  const SavedImage& first = g->SavedImages[0];
  for (int i = 0; i + 1 < first.ExtensionBlockCount; ++i) {
    const ExtensionBlock& b = first.ExtensionBlocks[i];
    if (b.Function == APPLICATION_EXT_FUNC_CODE && b.ByteCount == 11 &&
        std::string(reinterpret_cast<char*>(b.Bytes), 11) == "NETSCAPE2.0") {
      const ExtensionBlock& sub = first.ExtensionBlocks[i + 1];
      REQUIRE(sub.ByteCount == 3);
      CHECK(sub.Bytes[0] == 1);
      CHECK((sub.Bytes[1] | (sub.Bytes[2] << 8)) == 0);
      loop_found = true;
    }
  }
  CHECK(loop_found);
  int delays[4];
  for (int i = 0; i < 4; ++i) {
    GraphicsControlBlock gcb;
    REQUIRE(DGifSavedExtensionToGCB(g, i, &gcb) == GIF_OK);
    delays[i] = gcb.DelayTime;
  }
  CHECK(delays[0] == 7);
  CHECK(delays[2] == 7);
  CHECK(delays[3] == 250);  // the last frame is held
  // Decoded colours against the rendered frames: the palette error is small.
  for (int i = 0; i < 4; ++i) {
    const SavedImage& im = g->SavedImages[i];
    REQUIRE(im.ImageDesc.Width == 960);
    REQUIRE(im.ImageDesc.Height == 720);
    const ColorMapObject* map = im.ImageDesc.ColorMap ? im.ImageDesc.ColorMap : g->SColorMap;
    REQUIRE(map != nullptr);
    double sum = 0, sum_plots = 0;
    int worst = 0;
    std::vector<int> hist(256, 0);
    for (int y = 0; y < 720; ++y)
      for (int x = 0; x < 960; ++x) {
        const int idx = im.RasterBits[y * 960 + x];
        REQUIRE(idx < map->ColorCount);
        const GifColorType& c = map->Colors[idx];
        const uint8_t* ref = frames[i].at(x, y);
        const int e = std::max({std::abs(c.Red - ref[0]), std::abs(c.Green - ref[1]), std::abs(c.Blue - ref[2])});
        sum += e;
        if (y >= 380) sum_plots += e;
        worst = std::max(worst, e);
        ++hist[e];
      }
    const double mean = sum / (960.0 * 720.0), mean_plots = sum_plots / (960.0 * 340.0);
    int p99 = 0;
    for (int acc = 0; p99 < 255 && (acc += hist[p99]) < 0.99 * 960 * 720;) ++p99;
    MESSAGE("frame ", i, ": mean max-channel error ", mean, " (plots ", mean_plots, "), 99th percentile ", p99,
            ", worst ", worst);
    CHECK(mean_plots < 0.3);  // text, axes and curves: nearly exact
    if (i < 3) {
      CHECK(mean < 1.0);
      CHECK(p99 <= 8);
    } else {
      CHECK(mean < 5.0);
    }
    // The white background comes out exact.
    const GifColorType& bg = map->Colors[im.RasterBits[5 * 960 + 955]];
    CHECK((bg.Red == 255 && bg.Green == 255 && bg.Blue == 255));
  }
  DGifCloseFile(g, &err);
}

TEST_CASE("render: a frame with few colours is stored exactly") {
  Rgb8Image img(64, 48, 255);
  for (int y = 0; y < 48; ++y)
    for (int x = 0; x < 64; ++x) {
      uint8_t* p = img.at(x, y);
      p[0] = static_cast<uint8_t>((x / 8) * 30);
      p[1] = static_cast<uint8_t>((y / 8) * 40);
      p[2] = static_cast<uint8_t>((x % 4) * 60);  // 8 x 4 x 6 = 192 colours
    }
  const PalettedImage q = quantize_frame(img);
  CHECK(q.palette.size() / 3 == 192);
  for (int i = 0; i < 64 * 48; ++i)
    for (int k = 0; k < 3; ++k) REQUIRE(q.palette[q.indices[i] * 3 + k] == img.pixels[i * 3 + k]);
}

TEST_CASE("render: an unfinished or failed GIF leaves neither the file nor a temporary") {
  TempDir dir;
  Rgb8Image frame(32, 24, 200);
  {
    GifWriter gif(dir.path + "/a.gif", 32, 24);
    gif.add_frame(frame);
    CHECK(dir.files().size() == 1);  // the temporary, while writing
  }
  CHECK(dir.files().empty());
  {
    GifWriter gif(dir.path + "/b.gif", 32, 24);
    CHECK_THROWS_AS(gif.add_frame(Rgb8Image(33, 24)), Error);  // wrong size
    CHECK_THROWS_AS(gif.finish(), Error);                     // no frame yet
  }
  CHECK(dir.files().empty());
  // A folder that does not exist: the error names the file.
  const std::string missing = dir.path + "/no/such/folder/c.gif";
  try {
    GifWriter gif(missing, 32, 24);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find(missing) != std::string::npos);
  }
  // The target is a folder: the rename in finish() fails, naming it, and the temporary goes.
  const std::string sub = dir.path + "/sub";
  REQUIRE(mkdir(sub.c_str(), 0777) == 0);
  try {
    GifWriter gif(sub, 32, 24);
    gif.add_frame(frame);
    gif.finish();
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find(sub) != std::string::npos);
  }
  CHECK(dir.files() == std::vector<std::string>{"sub"});
  rmdir(sub.c_str());
}

TEST_CASE("render: pick_frames keeps the ends, the count, and even spacing") {
  for (auto [steps, maxf] : {std::pair<int, int>{100, 10}, {1000, 60}, {7, 100}, {59, 60}, {60, 60}, {1, 2}, {3, 2}}) {
    CAPTURE(steps);
    CAPTURE(maxf);
    const std::vector<int> p = pick_frames(steps, maxf);
    REQUIRE(static_cast<int>(p.size()) == std::min(steps + 1, maxf));
    CHECK(p.front() == 0);
    CHECK(p.back() == steps);
    int lo = steps, hi = 0;
    for (size_t i = 1; i < p.size(); ++i) {
      CHECK(p[i] > p[i - 1]);
      lo = std::min(lo, p[i] - p[i - 1]);
      hi = std::max(hi, p[i] - p[i - 1]);
    }
    if (p.size() > 1) CHECK(hi - lo <= 1);  // as even as whole steps allow
  }
  CHECK(pick_frames(0, 10) == std::vector<int>{0});
  // pick_frames_front: every step of the first half, then even spacing to the end.
  for (auto [steps, maxf] : {std::pair<int, int>{300, 100}, {1000, 60}, {7, 100}, {99, 100}, {100, 100}, {5, 3},
                             {10, 4}, {3, 2}}) {
    CAPTURE(steps);
    CAPTURE(maxf);
    const std::vector<int> p = pick_frames_front(steps, maxf);
    REQUIRE(static_cast<int>(p.size()) == std::min(steps + 1, maxf));
    CHECK(p.front() == 0);
    CHECK(p.back() == steps);
    for (size_t i = 1; i < p.size(); ++i) CHECK(p[i] > p[i - 1]);
    if (maxf >= 4)
      for (int i = 0; i < std::min(steps + 1, maxf / 2); ++i) CHECK(p[i] == i);
  }
  const std::vector<int> f = pick_frames_front(300, 100);
  CHECK(f[49] == 49);
  CHECK(f[50] == 50);
  CHECK(f[51] - f[50] >= 4);  // the other 50 frames over steps 50 .. 300
  CHECK_THROWS_AS(pick_frames(10, 1), Error);
  CHECK_THROWS_AS(pick_frames(-1, 10), Error);
}

TEST_CASE("render: save_rgb8_png writes a PNG that decodes to the same pixels") {
  TempDir dir;
  Rgb8Image img(37, 21);
  Rng rng(5);
  for (uint8_t& v : img.pixels) v = static_cast<uint8_t>(rng.below(256));
  save_rgb8_png(dir.path + "/x.png", img);
  const std::string bytes = read_file(dir.path + "/x.png");
  const Tensor back = decode_image(bytes, "x.png");  // libpng
  REQUIRE(back.shape() == Shape{21, 37, 3});
  const std::vector<float> v = back.to_vector();
  bool same = true;
  for (size_t i = 0; i < v.size(); ++i) same = same && std::lround(v[i] * 255.f) == img.pixels[i];
  CHECK(same);
  CHECK(dir.files() == std::vector<std::string>{"x.png"});
  CHECK_THROWS_AS(save_rgb8_png(dir.path + "/missing/x.png", img), Error);
}

TEST_CASE("render: index.html escapes every string and shows the values it was given") {
  ReportInfo r;
  r.input_name = "cat <1>&\"2\".png";
  r.image_width = 28;
  r.image_height = 28;
  r.model = "inception_v3 <script>alert(1)</script>";
  r.weights_hash = "sha256:0cc3c7bd";
  r.method = "I-FGSM";
  r.settings = {{"epsilon", "8/255"}, {"step size", "1/255"}, {"note", "a'b"}};
  r.target = {341, "hog & pig", 0.931f};
  r.success = true;
  r.success_8bit = false;
  r.steps = 37;
  r.max_steps = 100;
  r.linf_255 = 8;
  r.l2_255 = 512.34f;
  r.wall_seconds = 12.345;
  r.device = "cuda:0";
  r.top5_original = {{281, "tabby", 0.872f}, {282, "tiger cat", 0.05f}};
  r.top5_final = {{341, "hog & pig", 0.931f}, {281, "tabby", 0.012f}};
  for (int i = 0; i < 38; ++i) {
    r.target_prob_history.push_back(i / 37.f);
    r.loss_history.push_back(i == 20 ? NAN : 10.f - i * 0.25f);
  }
  r.perturbation_scale_255 = 3;
  r.original_png = "original image.png";
  const std::string html = report_html(r);
  // Escaped, never raw.
  CHECK(html.find("<script>") == std::string::npos);
  CHECK(html.find("&lt;script&gt;alert(1)&lt;/script&gt;") != std::string::npos);
  CHECK(html.find("cat &lt;1&gt;&amp;&quot;2&quot;.png") != std::string::npos);
  CHECK(html.find("hog &amp; pig (341)") != std::string::npos);
  CHECK(html.find("a&#39;b") != std::string::npos);
  CHECK(html.find("hog & pig") == std::string::npos);
  // Values.
  for (const char* s : {"37 of 100", "8/255", "512.3/255", "12.35 s", "sha256:0cc3c7bd", "cuda:0", "87.2%", "93.1%",
                        "1.2%", "step size", "1/255", "\u00b13/255 mapped to full colour", "not</b> after rounding"})
    CHECK_MESSAGE(html.find(s) != std::string::npos, s);
  // Pictures by relative name (URL-escaped), small ones enlarged crisply; two inline SVG plots.
  CHECK(html.find("src=\"original%20image.png\"") != std::string::npos);
  CHECK(html.find("src=\"adversarial.png\"") != std::string::npos);
  CHECK(html.find("src=\"perturbation.png\"") != std::string::npos);
  CHECK(html.find("src=\"animation.gif\"") != std::string::npos);
  CHECK(html.find("class=\"pixelated\" width=\"280\"") != std::string::npos);
  size_t svgs = 0;
  for (size_t at = 0; (at = html.find("<svg", at)) != std::string::npos; ++at) ++svgs;
  CHECK(svgs == 2);
  // Offline: nothing fetched from elsewhere, no scripts.
  CHECK(html.find("http://") == html.find("http://www.w3.org/2000/svg"));
  CHECK(html.find("https://") == std::string::npos);
  CHECK(html.find("<script") == std::string::npos);
  // The NaN loss value breaks the line into two pieces (two "M" moves in the loss path).
  const size_t loss_svg = html.rfind("<svg");
  const size_t path_at = html.find("stroke=\"#6a3d9a\"", loss_svg);
  REQUIRE(path_at != std::string::npos);
  const size_t d_at = html.rfind("d=\"", path_at);
  const std::string d = html.substr(d_at, path_at - d_at);
  CHECK(std::count(d.begin(), d.end(), 'M') == 2);
  CHECK(std::count(d.begin(), d.end(), 'L') == 19 + 16);  // 20 points before the NaN, 17 after

  TempDir dir;
  write_report(dir.path + "/index.html", r);
  CHECK(read_file(dir.path + "/index.html") == html);
  CHECK(dir.files() == std::vector<std::string>{"index.html"});
  const std::string bad = dir.path + "/nope/index.html";
  try {
    write_report(bad, r);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find(bad) != std::string::npos);
  }
  CHECK(dir.files() == std::vector<std::string>{"index.html"});
}

TEST_CASE("render: an attack on a large photo animates it reduced, with the change between steps") {
  // 1200x1000 pixels in a 480-pixel animation: the frames see the photo reduced by 2
  // (tools/cmd_attack.cpp, frame_factor); the change panel after the first frame must show
  // the step's change (the embedded model is gray: red and blue in the diverging map).
  TempDir dir;
  Rng rng(21);
  const std::string photo = dir.path + "/photo.png";
  save_png(photo, rand_uniform({1000, 1200, 3}, rng, 0.2f, 0.8f));
  const std::string cmd = cat(TRICK_BINARY, " attack ", photo, " --target 'ankle boot' --method pgd --steps 4",
                              " --confidence 1 --refine-steps 0 --frame-width 480 --threads 1 --out ", dir.path,
                              " > /dev/null 2>&1");
  const int rc = std::system(cmd.c_str());
  REQUIRE(WIFEXITED(rc));
  CHECK((WEXITSTATUS(rc) == 0 || WEXITSTATUS(rc) == 3));  // 3: the target was not reached
  int err = 0;
  GifFileType* g = DGifOpenFileName((dir.path + "/animation.gif").c_str(), &err);
  REQUIRE(g != nullptr);
  REQUIRE(DGifSlurp(g) == GIF_OK);
  CHECK(g->SWidth == 480);
  REQUIRE(g->ImageCount >= 2);
  // Where the change panel is: the layout of a 480x360 frame of the photo reduced to 600x500.
  FrameInfo info;
  info.step = 1;
  info.total_steps = 4;
  info.image = Tensor::zeros(Shape{500, 600, 1});
  info.probs.assign(10, 0.1f);
  RenderOptions ropt;
  ropt.width = 480;
  ropt.height = 360;
  const PixelRect d = frame_layout(info, ropt).delta;
  REQUIRE(d.w > 50);
  REQUIRE(d.h > 50);
  // Each frame composited onto the canvas (frames may cover a part of it, with transparent
  // pixels where nothing changed), then the change panel's pixels counted: a PGD step moves
  // every pixel by +-1/255 (more where it projects), so most of them must be red or blue, not grey
  // (measured: 79-86%; a panel averaged flat is 0%).
  std::vector<GifColorType> canvas(static_cast<size_t>(g->SWidth) * g->SHeight);
  for (int i = 0; i < g->ImageCount; ++i) {
    const SavedImage& im = g->SavedImages[i];
    const ColorMapObject* map = im.ImageDesc.ColorMap ? im.ImageDesc.ColorMap : g->SColorMap;
    REQUIRE(map != nullptr);
    GraphicsControlBlock gcb;
    int transparent = -1;
    if (DGifSavedExtensionToGCB(g, i, &gcb) == GIF_OK) transparent = gcb.TransparentColor;
    for (int y = 0; y < im.ImageDesc.Height; ++y)
      for (int x = 0; x < im.ImageDesc.Width; ++x) {
        const int idx = im.RasterBits[y * im.ImageDesc.Width + x];
        if (idx == transparent || idx >= map->ColorCount) continue;
        canvas[static_cast<size_t>(im.ImageDesc.Top + y) * g->SWidth + im.ImageDesc.Left + x] = map->Colors[idx];
      }
    if (i == 0) continue;  // the first frame has no change yet
    int coloured = 0;
    for (int y = d.y; y < d.y + d.h; ++y)
      for (int x = d.x; x < d.x + d.w; ++x) {
        const GifColorType c = canvas[static_cast<size_t>(y) * g->SWidth + x];
        coloured += std::abs(c.Red - c.Blue) > 60;
      }
    INFO("frame " << i << ": " << coloured << " of " << d.w * d.h << " change-panel pixels coloured");
    CHECK(coloured > d.w * d.h / 2);
  }
  DGifCloseFile(g, &err);
}

TEST_CASE("render: trick render-demo (the hidden debugging aid) writes its animation, pictures and page") {
  for (const bool gray : {false, true}) {
    CAPTURE(gray);
    TempDir dir;
    const std::string cmd = cat(TRICK_BINARY, " render-demo --out ", dir.path, " --steps 6 --max-frames 4",
                                " --width 480 --height 360", gray ? " --gray" : " --classes 20", " > /dev/null 2>&1");
    const int rc = std::system(cmd.c_str());
    REQUIRE(WIFEXITED(rc));
    REQUIRE(WEXITSTATUS(rc) == 0);
    CHECK(dir.files() == std::vector<std::string>{"adversarial.png", "animation.gif", "frame_0.png", "frame_4.png",
                                                  "frame_6.png", "index.html", "original.png", "perturbation.png"});
    int err = 0;
    GifFileType* g = DGifOpenFileName((dir.path + "/animation.gif").c_str(), &err);
    REQUIRE(g != nullptr);
    REQUIRE(DGifSlurp(g) == GIF_OK);
    CHECK(g->ImageCount == 4);
    CHECK(g->SWidth == 480);
    CHECK(g->SHeight == 360);
    DGifCloseFile(g, &err);
    const DecodedImage frame = read_image_file(dir.path + "/frame_6.png");
    CHECK(frame.width == 480);
    CHECK(frame.height == 360);
    const DecodedImage image = read_image_file(dir.path + "/adversarial.png");
    CHECK(image.height == (gray ? 28 : 299));  // --size: the height
  }
}

}  // namespace test_render
