// Image I/O, .npy, the differentiable resize + crop, preprocessing sizes and class names.
// References: pixel statistics and transform sizes computed with PIL 9.4 / torchvision
// 0.14 (python3-pil, python3-torchvision), a plain-loop double-precision resize written
// here from Pillow's formula, and central differences. tests/images_check.py compares
// whole images against PIL.
#include <doctest/doctest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/var.h"
#include "kernels/attack.h"
#include "layers/resize.h"
#include "models/labels.h"
#include "models/preprocess.h"
#include "tensor/random.h"
#include "tools/lib/image.h"
#include "tools/lib/npy.h"
#include "tests/test_util.h"

namespace test_images {

using namespace trick;

namespace {

const std::string kSkimage = "/usr/lib/python3/dist-packages/skimage/data/";

// A scratch directory for this process, removed at exit.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/trick_test_images_XXXXXX";
    const char* d = mkdtemp(tmpl);
    if (d) path = d;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path.empty()) std::filesystem::remove_all(path, ec);
  }
};

std::string temp_dir() {
  static TempDir dir;
  REQUIRE(!dir.path.empty());
  return dir.path;
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The message of the trick::Error f throws ("" if none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// --- a plain-loop reference of Pillow's antialiased bilinear resize, in double ---------------

// weights[o][i]: the weight of input i in output o (dense), as Pillow's precompute_coeffs
// defines them for the BILINEAR filter on the whole image.
std::vector<std::vector<double>> pillow_weights(int in, int out) {
  std::vector<std::vector<double>> m(out, std::vector<double>(in, 0.0));
  const double scale = double(in) / out, fs = scale < 1 ? 1.0 : scale, support = fs;
  for (int o = 0; o < out; ++o) {
    const double center = (o + 0.5) * scale;
    int lo = int(center - support + 0.5), hi = int(center + support + 0.5);
    if (lo < 0) lo = 0;
    if (hi > in) hi = in;
    double total = 0;
    for (int i = lo; i < hi; ++i) {
      const double t = std::fabs((i - center + 0.5) / fs);
      m[o][i] = t < 1 ? 1 - t : 0;
      total += m[o][i];
    }
    for (int i = lo; i < hi; ++i) m[o][i] /= total;
  }
  return m;
}

struct ResizeCase {
  int n, h, w, c, out_h, out_w, top, left, crop_h, crop_w;
};

// y[b, i, j, ch] = sum over all (a, k) of wy[top + i][a] * wx[left + j][k] * x[b, a, k, ch]
std::vector<double> resize_reference(const std::vector<double>& x, const ResizeCase& t) {
  const auto wy = pillow_weights(t.h, t.out_h), wx = pillow_weights(t.w, t.out_w);
  std::vector<double> y(size_t(t.n) * t.crop_h * t.crop_w * t.c, 0.0);
  for (int b = 0; b < t.n; ++b)
    for (int i = 0; i < t.crop_h; ++i)
      for (int j = 0; j < t.crop_w; ++j)
        for (int ch = 0; ch < t.c; ++ch) {
          double s = 0;
          for (int a = 0; a < t.h; ++a)
            for (int k = 0; k < t.w; ++k)
              s += wy[t.top + i][a] * wx[t.left + j][k] * x[((size_t(b) * t.h + a) * t.w + k) * t.c + ch];
          y[((size_t(b) * t.crop_h + i) * t.crop_w + j) * t.c + ch] = s;
        }
  return y;
}

std::vector<ResizeCase> resize_cases() {
  return {
      {1, 7, 9, 3, 4, 5, 0, 0, 4, 5},         // downscale both axes
      {2, 5, 6, 2, 11, 13, 2, 3, 7, 8},       // upscale, crop inside
      {1, 13, 4, 1, 6, 4, 1, 0, 4, 4},        // rows only (cols untouched)
      {1, 4, 17, 3, 4, 7, 0, 1, 4, 5},        // cols only, cropped
      {1, 9, 9, 2, 9, 9, 2, 3, 5, 4},         // crop without resize (identity weights)
      {3, 31, 23, 3, 10, 29, 1, 4, 8, 21},    // down in H, up in W
      {1, 3, 50, 1, 1, 3, 0, 1, 1, 2},        // 1 output row, big downscale in W
      {1, 1, 1, 2, 3, 2, 0, 0, 3, 2},         // 1x1 image upscaled
  };
}

}  // namespace

// ================================ images ======================================================

TEST_CASE("images: decode skimage photos like PIL") {
  // Per-channel sums of the 8-bit RGB values and of PIL's convert("L"), and pixel (7, 11),
  // from PIL 9.4: np.asarray(Image.open(f).convert("RGB")).
  struct Expect {
    const char* file;
    int h, w;
    long long r, g, b, l;
    int px[3], px_l;
  };
  const Expect cases[] = {
      {"astronaut.png", 512, 512, 37109758, 27724204, 25290362, 30252539, {36, 22, 77}, 32},
      {"chelsea.png", 300, 451, 19980169, 15078438, 11743750, 16166008, {150, 128, 114}, 133},
      {"coffee.png", 400, 600, 38056581, 20590566, 12356340, 24875976, {23, 15, 9}, 17},
      {"camera.png", 512, 512, 33832495, 33832495, 33832495, 33832495, {199, 199, 199}, 199},  // gray
      {"logo.png", 500, 500, 53835289, 49921750, 32302192, 49086406, {255, 255, 255}, 255},     // RGBA
  };
  for (const Expect& e : cases) {
    CAPTURE(e.file);
    const Tensor rgb = load_image(kSkimage + e.file);
    REQUIRE(rgb.shape() == Shape{e.h, e.w, 3});
    const std::vector<float> v = rgb.to_vector();
    long long sums[3] = {0, 0, 0};
    bool on_grid = true;
    for (size_t i = 0; i < v.size(); ++i) {
      const float q = v[i] * 255.f;
      on_grid = on_grid && std::fabs(q - std::round(q)) < 1e-3f && v[i] >= 0.f && v[i] <= 1.f;
      sums[i % 3] += std::lround(q);
    }
    CHECK(on_grid);
    CHECK(sums[0] == e.r);
    CHECK(sums[1] == e.g);
    CHECK(sums[2] == e.b);
    for (int ch = 0; ch < 3; ++ch) CHECK(std::lround(v[(7 * e.w + 11) * 3 + ch] * 255) == e.px[ch]);

    const Tensor gray = load_image(kSkimage + e.file, 1);
    REQUIRE(gray.shape() == Shape{e.h, e.w, 1});
    const std::vector<float> g = gray.to_vector();
    long long lsum = 0;
    for (float x : g) lsum += std::lround(x * 255.f);
    CHECK(lsum == e.l);
    CHECK(std::lround(g[7 * e.w + 11] * 255) == e.px_l);
  }
}

TEST_CASE("images: a gray file becomes three equal channels") {
  const std::vector<float> v = load_image(kSkimage + "camera.png").to_vector();
  bool equal = true;
  for (size_t i = 0; i < v.size(); i += 3) equal = equal && v[i] == v[i + 1] && v[i] == v[i + 2];
  CHECK(equal);
}

TEST_CASE("images: unreadable files are errors that name the file and the problem") {
  const std::string dir = temp_dir();
  std::string msg = error_of([&] { load_image(dir + "/missing.png"); });
  CHECK(contains(msg, dir + "/missing.png"));
  CHECK(contains(msg, "no such file"));

  write_file(dir + "/empty.png", "");
  msg = error_of([&] { load_image(dir + "/empty.png"); });
  CHECK(contains(msg, "empty.png"));
  CHECK(contains(msg, "empty"));

  Rng rng(7);
  std::string noise(4096, '\0');
  for (char& ch : noise) ch = static_cast<char>(rng.below(256));
  noise[0] = 'x';  // not accidentally a BMP ("BM") or other magic
  write_file(dir + "/noise.jpg", noise);
  msg = error_of([&] { load_image(dir + "/noise.jpg"); });
  CHECK(contains(msg, "noise.jpg"));
  CHECK(contains(msg, "not an image"));

  msg = error_of([&] { load_image(kSkimage + "truncated.jpg"); });
  CHECK(contains(msg, "truncated.jpg"));
  CHECK(contains(msg, "truncated or corrupt JPEG"));

  const std::string png = read_file(kSkimage + "chelsea.png");
  REQUIRE(png.size() > 1000);
  write_file(dir + "/half.png", png.substr(0, png.size() / 2));
  msg = error_of([&] { load_image(dir + "/half.png"); });
  CHECK(contains(msg, "half.png"));
  CHECK(contains(msg, "truncated or corrupt PNG"));

  // A 25-byte PNG declaring 40000 x 40000 pixels must be refused before decoding.
  std::string huge("\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", 16);
  const unsigned char ihdr[13] = {0, 0, 0x9c, 0x40, 0, 0, 0x9c, 0x40, 8, 2, 0, 0, 0};
  huge.append(reinterpret_cast<const char*>(ihdr), 13);
  huge.append("\0\0\0\0", 4);  // a wrong CRC: never read, the size is refused from the header
  write_file(dir + "/huge.png", huge);
  msg = error_of([&] { load_image(dir + "/huge.png"); });
  CHECK(contains(msg, "huge.png"));
  CHECK(contains(msg, "40000x40000"));
  CHECK(contains(msg, "megapixels"));

  // A JPEG whose Huffman table declares 512 codes (libjpeg: "Bogus Huffman table definition").
  std::string jpeg = read_file(kSkimage + "rocket.jpg");
  const size_t dht = jpeg.find("\xff\xc4");
  REQUIRE(dht != std::string::npos);
  for (int k = 0; k < 16; ++k) jpeg[dht + 5 + k] = 0x20;
  write_file(dir + "/dht.jpg", jpeg);
  msg = error_of([&] { load_image(dir + "/dht.jpg"); });
  CHECK(contains(msg, "dht.jpg"));
  CHECK(contains(msg, "Huffman"));

  msg = error_of([&] { load_image(dir); });
  CHECK(contains(msg, "directory"));
  CHECK(contains(error_of([&] { load_image(kSkimage + "astronaut.png", 2); }), "1 or 3 channels"));
}

TEST_CASE("images: a file read ahead converts to the pixels load_image gives, and says whether it is in colour") {
  for (const char* file : {"astronaut.png", "camera.png", "logo.png", "rocket.jpg"}) {
    CAPTURE(file);
    const DecodedImage d = read_image_file(kSkimage + file);
    for (int c : {1, 3}) {
      const std::vector<float> ahead = image_tensor(d, c).to_vector();
      const std::vector<float> direct = load_image(kSkimage + file, c).to_vector();
      REQUIRE(ahead.size() == direct.size());
      CHECK(std::memcmp(ahead.data(), direct.data(), ahead.size() * sizeof(float)) == 0);
    }
  }
  CHECK(read_image_file(kSkimage + "astronaut.png").in_colour());
  CHECK_FALSE(read_image_file(kSkimage + "camera.png").in_colour());  // a gray file
  // An RGB file whose channels are equal is not in colour, until one value differs.
  const std::string dir = temp_dir();
  Tensor rgb = load_image(kSkimage + "camera.png", 3);
  write_file(dir + "/gray_rgb.png", encode_png(rgb));
  DecodedImage d = read_image_file(dir + "/gray_rgb.png");
  REQUIRE(d.channels == 3);
  CHECK_FALSE(d.in_colour());
  rgb.data()[rgb.numel() - 1] = rgb.data()[rgb.numel() - 1] < 0.5f ? 1.f : 0.f;  // the last pixel's blue
  write_file(dir + "/one_blue.png", encode_png(rgb));
  CHECK(read_image_file(dir + "/one_blue.png").in_colour());
  CHECK(contains(error_of([&] { image_tensor(d, 2); }), "1 or 3 channels"));
  CHECK(contains(error_of([&] { image_tensor(DecodedImage(), 3); }), "no decoded image"));
}

TEST_CASE("images: ImageFiles reads every file ahead up to its budget, and a bad one fails there") {
  const std::string good = kSkimage + "astronaut.png", missing = temp_dir() + "/absent.png";
  const std::string msg = error_of([&] { ImageFiles files({good, missing}); });
  CHECK(contains(msg, missing));
  CHECK(contains(msg, "no such file"));
  // Past the budget (here: after the first file) files are read only when taken.
  ImageFiles files({good, missing}, 1);
  const std::vector<float> first = image_tensor(files.take(good), 3).to_vector();
  CHECK(first == load_image(good, 3).to_vector());
  CHECK(contains(error_of([&] { files.take(missing); }), "no such file"));
  CHECK(image_tensor(files.take(good), 3).to_vector() == first);  // taken twice: read again
}

// The commands read their images before the model: a bad image with weights that do not even
// exist is reported as the image's problem (and at once, not after Inception's 100 MB load).
TEST_CASE("images: classify, grad, precision and attack say a bad image is bad before they load the model") {
  const std::string dir = temp_dir();
  write_file(dir + "/not_an_image.png", "plain text");
  const std::string bad = dir + "/not_an_image.png", weights = dir + "/absent.safetensors";
  const std::string good = "data/samples/fashion/7_sneaker.png";
  const std::string lines[] = {
      "classify " + good + " " + bad + " --weights " + weights,
      "grad " + bad + " --target 3 --out " + dir + "/g.npy --weights " + weights,
      "precision " + good + " " + bad + " --weights " + weights,
      "attack " + good + " " + bad + " --target 3 --out " + dir + "/out --weights " + weights,
  };
  for (const std::string& line : lines) {
    CAPTURE(line);
    int status = 0;
    const std::string out = trick_test::run_capture(std::string(TRICK_BINARY) + " " + line + " 2>&1", &status);
    CHECK(status == 1);
    CHECK(contains(out, "error: " + bad + ": not an image"));
    CHECK_FALSE(contains(out, "absent.safetensors"));
  }
}

TEST_CASE("images: a lower pixel limit refuses larger images before decoding") {
  const std::string png = read_file(kSkimage + "chelsea.png");  // 451 x 300
  CHECK(decode_image(png, "chelsea.png", 3, 451 * 300).shape() == Shape{300, 451, 3});
  const std::string msg = error_of([&] { decode_image(png, "chelsea.png", 3, 451 * 300 - 1); });
  CHECK(contains(msg, "chelsea.png"));
  CHECK(contains(msg, "451x300"));
  CHECK(contains(error_of([&] { decode_image(png, "chelsea.png", 3, 0); }), "pixel limit"));
}

TEST_CASE("images: to_8bit rounds, clamps and maps NaN to 0") {
  for (int k = 0; k <= 255; ++k) CHECK(to_8bit(k / 255.f) == k);
  CHECK(to_8bit(-0.3f) == 0);
  CHECK(to_8bit(1.7f) == 255);
  CHECK(to_8bit(std::nanf("")) == 0);
  CHECK(to_8bit(0.5f) == 128);            // 127.5 rounds away from zero
  CHECK(to_8bit(10.4f / 255.f) == 10);
  CHECK(to_8bit(10.6f / 255.f) == 11);
}

TEST_CASE("images: to_8bit and round_to_8bit are lround(x * 255) at every float near a rounding boundary") {
  // Every float within 3000 ulps of each (k + 1/2) / 255 and of each k / 255, and 200,000
  // random ones: both roundings (the PNG writer's and the attack's) against std::lround.
  std::vector<float> xs;
  for (int k = 0; k <= 255; ++k)
    for (float centre : {(k + 0.5f) / 255.f, k / 255.f}) {
      float lo = centre, hi = centre;
      for (int u = 0; u < 3000; ++u) {
        lo = std::nextafter(lo, -1.f);
        hi = std::nextafter(hi, 2.f);
        xs.push_back(lo);
        xs.push_back(hi);
      }
    }
  xs.push_back(0.49999997f / 255.f);
  xs.push_back(std::nextafter(0.5f, 0.f) / 255.f);
  Rng rng(12);
  for (int i = 0; i < 200000; ++i) xs.push_back(static_cast<float>(rng.uniform()) * 1.2f - 0.1f);
  auto reference = [](float x) -> int {
    if (!(x > 0.f)) return 0;
    if (x >= 1.f) return 255;
    return static_cast<int>(std::lround(x * 255.f));
  };
  Tensor t = Tensor::from_vector(Shape{static_cast<int64_t>(xs.size())}, xs);
  round_to_8bit(t);
  const std::vector<float> rounded = t.to_vector();
  int bad_png = 0, bad_attack = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    bad_png += to_8bit(xs[i]) != reference(xs[i]);
    bad_attack += rounded[i] != static_cast<float>(reference(xs[i])) / 255.f;
  }
  CHECK(xs.size() > 3000000);
  CHECK(bad_png == 0);
  CHECK(bad_attack == 0);
}

TEST_CASE("images: PNG write-read round trip is exact in 8 bits") {
  const std::string dir = temp_dir();
  Rng rng(11);
  for (int c : {3, 1}) {
    for (auto hw : {std::pair<int, int>{1, 1}, {17, 5}, {64, 33}}) {
      CAPTURE(c);
      CAPTURE(hw.first);
      const Shape s{hw.first, hw.second, c};
      // Arbitrary floats, some outside [0, 1]: what is saved is their 8-bit quantisation.
      const Tensor img = rand_uniform(s, rng, -0.2f, 1.2f);
      const std::string path = dir + "/rt_" + std::to_string(c) + ".png";
      save_png(path, img);
      const Tensor back = load_image(path, c);
      REQUIRE(back.shape() == s);
      const std::vector<float> got = back.to_vector(), want = quantize_8bit(img).to_vector(), src = img.to_vector();
      int bad = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        bad += got[i] != want[i];
        bad += std::lround(got[i] * 255) != to_8bit(src[i]);
      }
      CHECK(bad == 0);
    }
  }
  // A batch of one is accepted; a colour image written as RGB reads back as gray by PIL's luma.
  const Tensor rgb = Tensor::from_vector(Shape{1, 1, 2, 3}, {1.f, 0.f, 0.f, 0.f, 0.f, 1.f});
  save_png(dir + "/rb.png", rgb);
  const std::vector<float> l = load_image(dir + "/rb.png", 1).to_vector();
  CHECK(std::lround(l[0] * 255) == 76);  // PIL: Image.new("RGB", (1, 1), (255, 0, 0)).convert("L") -> 76
  CHECK(std::lround(l[1] * 255) == 29);  // (0, 0, 255) -> 29
}

TEST_CASE("images: save_png refuses bad shapes and unwritable paths") {
  CHECK(contains(error_of([] { save_png(temp_dir() + "/x.png", Tensor::zeros(Shape{4, 4, 2})); }), "channels"));
  CHECK(contains(error_of([] { save_png(temp_dir() + "/x.png", Tensor::zeros(Shape{4, 4})); }), "(H, W, C)"));
  const std::string msg = error_of([] { save_png(temp_dir() + "/no/such/dir/x.png", Tensor::zeros(Shape{4, 4, 3})); });
  CHECK(contains(msg, "no/such/dir/x.png"));
}

TEST_CASE("images: npy round trip and header layout") {
  const std::string dir = temp_dir();
  Rng rng(3);
  for (const Shape& s : {Shape{5}, Shape{3, 4}, Shape{2, 3, 5}, Shape{2, 7, 3, 1}}) {
    CAPTURE(s.str());
    const Tensor t = randn(s, rng);
    save_npy(dir + "/t.npy", t);
    const std::string bytes = read_file(dir + "/t.npy");
    REQUIRE(bytes.size() > 10);
    CHECK(bytes.compare(0, 8, std::string("\x93NUMPY\x01\x00", 8)) == 0);
    const size_t header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
    CHECK((10 + header_len) % 64 == 0);
    CHECK(bytes[10 + header_len - 1] == '\n');
    CHECK(bytes.size() == 10 + header_len + 4 * size_t(s.numel()));
    const Tensor back = load_npy(dir + "/t.npy");
    CHECK(back.shape() == s);
    CHECK(back.to_vector() == t.to_vector());
  }
  // The shape is written the way Python writes tuples.
  save_npy(dir + "/one.npy", Tensor::zeros(Shape{5}));
  CHECK(contains(read_file(dir + "/one.npy"), "'shape': (5,)"));
  save_npy(dir + "/two.npy", Tensor::zeros(Shape{3, 4}));
  CHECK(contains(read_file(dir + "/two.npy"), "'shape': (3, 4)"));
  // A channel slice (strided view) is written as its values in C order.
  const Tensor base = randn(Shape{2, 3, 4}, rng);
  save_npy(dir + "/slice.npy", base.slice_last(1, 3));
  CHECK(load_npy(dir + "/slice.npy").to_vector() == base.slice_last(1, 3).contiguous().to_vector());

  write_file(dir + "/bad.npy", "not numpy");
  CHECK(contains(error_of([&] { load_npy(dir + "/bad.npy"); }), "not a .npy file"));
  std::string f64 = read_file(dir + "/two.npy");
  f64.replace(f64.find("<f4"), 3, "<f8");
  write_file(dir + "/f64.npy", f64);
  CHECK(contains(error_of([&] { load_npy(dir + "/f64.npy"); }), "'<f8'"));
  const std::string cut = read_file(dir + "/two.npy");
  write_file(dir + "/cut.npy", cut.substr(0, cut.size() - 4));
  CHECK(contains(error_of([&] { load_npy(dir + "/cut.npy"); }), "bytes of data"));
}

// ================================ resize ======================================================

TEST_CASE("resize: bilinear table matches Pillow's coefficients by hand") {
  // 4 -> 2: scale 2, support 2; output 0 has center 1, inputs 0..2 with tent weights
  // 0.75, 0.75, 0.25 (normalised by 1.75).
  const ResampleTable t = bilinear_resample_table(4, 2, 0, 2);
  const std::vector<float> e = t.entries.to_vector();
  const int64_t stride = t.entries.dim(1);
  CHECK(e[0] == 0.f);
  CHECK(e[1] == 3.f);
  CHECK(e[2] == doctest::Approx(0.75 / 1.75));
  CHECK(e[3] == doctest::Approx(0.75 / 1.75));
  CHECK(e[4] == doctest::Approx(0.25 / 1.75));
  // Output 1: center 3, inputs (int)(1.5) = 1 .. min((int)5.5, 4) = 4.
  CHECK(e[stride + 0] == 1.f);
  CHECK(e[stride + 1] == 3.f);
  CHECK(e[stride + 2] == doctest::Approx(0.25 / 1.75));
  // 2 -> 4 (upscaling): support 1; output 0 has center 0.25, inputs (int)(-0.25) = 0 ..
  // (int)(1.75) = 1, i.e. input 0 alone, normalised weight 1.
  const ResampleTable up = bilinear_resample_table(2, 4, 0, 4);
  const std::vector<float> u = up.entries.to_vector();
  const int64_t us = up.entries.dim(1);
  CHECK(u[0] == 0.f);
  CHECK(u[1] == 1.f);
  CHECK(u[2] == doctest::Approx(1.0));
  // Output 1: center 0.75: inputs 0, 1 with tent(-0.25) = 0.75, tent(0.75) = 0.25.
  CHECK(u[us + 0] == 0.f);
  CHECK(u[us + 2] == doctest::Approx(0.75));
  CHECK(u[us + 3] == doctest::Approx(0.25));
  CHECK(contains(error_of([] { bilinear_resample_table(4, 2, 1, 2); }), "not inside"));
}

TEST_CASE("resize: forward matches a plain-loop Pillow reference") {
  Rng rng(21);
  for (const ResizeCase& t : resize_cases()) {
    CAPTURE(t.h);
    CAPTURE(t.w);
    CAPTURE(t.out_h);
    CAPTURE(t.out_w);
    // Input as a channel slice of a wider tensor: the op must honour the row stride.
    const Tensor wide = rand_uniform(Shape{t.n, t.h, t.w, t.c + 3}, rng);
    const Tensor x = wide.slice_last(1, 1 + t.c);
    const std::vector<float> xv = x.to_vector();
    const std::vector<double> ref = resize_reference(std::vector<double>(xv.begin(), xv.end()), t);
    const Var y = resize_crop(Var(x), t.out_h, t.out_w, t.top, t.left, t.crop_h, t.crop_w);
    REQUIRE(y.shape() == Shape{t.n, t.crop_h, t.crop_w, t.c});
    const std::vector<float> got = y.value().to_vector();
    double max_err = 0;
    for (size_t i = 0; i < got.size(); ++i) max_err = std::max(max_err, std::fabs(got[i] - ref[i]));
    CHECK(max_err < 2e-6);
  }
}

TEST_CASE("resize: backward matches central differences") {
  Rng rng(5);
  for (const ResizeCase& t : resize_cases()) {
    CAPTURE(t.h);
    CAPTURE(t.w);
    CAPTURE(t.out_h);
    CAPTURE(t.out_w);
    Var x(rand_uniform(Shape{t.n, t.h, t.w, t.c}, rng), true);
    const Tensor g = randn(Shape{t.n, t.crop_h, t.crop_w, t.c}, rng);
    Var y = resize_crop(x, t.out_h, t.out_w, t.top, t.left, t.crop_h, t.crop_w);
    y.backward(g);
    REQUIRE(x.grad().defined());
    const std::vector<float> gv = g.to_vector(), xv = x.value().to_vector();
    auto f = [&](const std::vector<double>& p) {
      const std::vector<double> out = resize_reference(p, t);
      double s = 0;
      for (size_t i = 0; i < out.size(); ++i) s += gv[i] * out[i];
      return s;
    };
    const GradCheckReport r = check_gradient(f, std::vector<double>(xv.begin(), xv.end()), x.grad().to_vector());
    CHECK_MESSAGE(r.ok(), r.first_failure);
    CHECK(r.skipped_kinks == 0);

    // A second backward accumulates into the existing gradient.
    const std::vector<float> once = x.grad().to_vector();
    Var y2 = resize_crop(x, t.out_h, t.out_w, t.top, t.left, t.crop_h, t.crop_w);
    y2.backward(g);
    const std::vector<float> twice = x.grad().to_vector();
    double max_err = 0;
    for (size_t i = 0; i < once.size(); ++i) max_err = std::max<double>(max_err, std::fabs(twice[i] - 2 * once[i]));
    CHECK(max_err < 1e-5);
  }
}

TEST_CASE("resize: nothing to do returns the input, bad crops are errors") {
  Rng rng(1);
  Var x(rand_uniform(Shape{1, 6, 5, 3}, rng), true);
  const Var same = resize_crop(x, 6, 5, 0, 0, 6, 5);
  CHECK(same.state() == x.state());
  CHECK(contains(error_of([&] { resize_crop(x, 6, 5, 1, 0, 6, 5); }), "not inside"));
  CHECK(contains(error_of([&] { resize_crop(x, 0, 5, 0, 0, 1, 5); }), "must be positive"));
  CHECK(contains(error_of([&] { resize_crop(Var(Tensor::zeros(Shape{6, 5, 3})), 3, 3, 0, 0, 3, 3); }), "(N, H, W, C)"));
}

TEST_CASE("resize: preprocess sizes follow torchvision Resize(342) + CenterCrop(299)") {
  // (h, w) -> resized (h, w), crop top, left: from torchvision 0.14's
  // _compute_resized_output_size and center_crop (Python's round: halves to even).
  struct Case {
    int h, w, rh, rw, top, left;
  };
  const Case cases[] = {{512, 512, 342, 342, 22, 22}, {300, 451, 342, 514, 22, 108}, {400, 600, 342, 513, 22, 107},
                        {451, 300, 514, 342, 108, 22}, {1000, 999, 342, 342, 22, 22}, {37, 53, 342, 489, 22, 95},
                        {100, 80, 427, 342, 64, 22},   {342, 700, 342, 700, 22, 200}, {343, 301, 389, 342, 45, 22},
                        // 22.5 and 24.5 round to the even neighbour
                        {344, 342, 344, 342, 22, 22},  {342, 348, 342, 348, 22, 24}};
  Preprocess p;
  p.resize_shorter = 342;
  p.crop = 299;
  for (const Case& c : cases) {
    CAPTURE(c.h);
    CAPTURE(c.w);
    const PreprocessPlan plan = plan_preprocess(c.h, c.w, p);
    CHECK(plan.resized_h == c.rh);
    CHECK(plan.resized_w == c.rw);
    CHECK(plan.crop_top == c.top);
    CHECK(plan.crop_left == c.left);
    CHECK(plan.out_h == 299);
    CHECK(plan.out_w == 299);
  }
}

TEST_CASE("resize: apply_preprocess equals resize_crop with the plan, and checks the model size") {
  Rng rng(9);
  const Var img(rand_uniform(Shape{2, 37, 53, 3}, rng));
  Preprocess p;
  p.resize_shorter = 40;
  p.crop = 31;
  const Var y = apply_preprocess(img, p, 31, 31);
  REQUIRE(y.shape() == Shape{2, 31, 31, 3});
  // 37x53 -> 40x57 (int(40 * 53 / 37) = 57), crop 31 at (round(4.5) = 4, round(13) = 13).
  const Var want = resize_crop(img, 40, 57, 4, 13, 31, 31);
  CHECK(y.value().to_vector() == want.value().to_vector());
  std::string msg = error_of([&] { apply_preprocess(img, p, 299, 299); });
  CHECK(contains(msg, "31x31"));
  CHECK(contains(msg, "299x299"));
  msg = error_of([&] { apply_preprocess(img, Preprocess{}, 28, 28); });
  CHECK(contains(msg, "37x53"));
  CHECK(contains(msg, "28x28"));
  const Var exact = apply_preprocess(img, Preprocess{}, 37, 53);
  CHECK(exact.state() == img.state());
  Preprocess crop_only;
  crop_only.crop = 60;
  CHECK(contains(error_of([&] { apply_preprocess(img, crop_only, 60, 60); }), "does not fit"));
}

// ================================ labels ======================================================

TEST_CASE("labels: the embedded ImageNet list") {
  const auto& classes = imagenet_classes();
  REQUIRE(classes.size() == 1000);
  CHECK(classes[0] == "tench, Tinca tinca");
  CHECK(classes[341] == "hog, pig, grunter, squealer, Sus scrofa");
  CHECK(classes[999] == "toilet tissue, toilet paper, bathroom tissue");
  CHECK(short_label(classes[341]) == "hog");
  CHECK(short_label(classes[906]) == "Windsor tie");
  // The embedded text is the data file, line for line.
  std::ifstream f(std::string(TRICK_SOURCE_DIR) + "/data/imagenet_classes.txt");
  std::string line;
  size_t i = 0;
  bool same = true;
  while (std::getline(f, line)) same = same && i < classes.size() && classes[i++] == line;
  CHECK(same);
  CHECK(i == 1000);
}

TEST_CASE("labels: resolving names and indices") {
  const auto& c = imagenet_classes();
  CHECK(resolve_class("pig", c) == 341);
  CHECK(resolve_class("  PIG ", c) == 341);
  CHECK(resolve_class("Windsor tie", c) == 906);
  CHECK(resolve_class("jellyfish", c) == 107);
  CHECK(resolve_class("porcupine", c) == 334);
  CHECK(resolve_class("giant panda", c) == 388);
  CHECK(resolve_class("341", c) == 341);
  CHECK(resolve_class("999", c) == 999);
  CHECK(resolve_class("0", c) == 0);
  CHECK(resolve_class("squeal", c) == 341);  // substring of exactly one class's synonym

  std::string msg = error_of([&] { resolve_class("panda", c); });
  CHECK(contains(msg, "ambiguous"));
  CHECK(contains(msg, "387"));
  CHECK(contains(msg, "388"));
  msg = error_of([&] { resolve_class("crane", c); });
  CHECK(contains(msg, "134"));
  CHECK(contains(msg, "517"));
  msg = error_of([&] { resolve_class("1000", c); });
  CHECK(contains(msg, "out of range"));
  CHECK(contains(msg, "0..999"));
  CHECK(contains(error_of([&] { resolve_class("-1", c); }), "out of range"));
  msg = error_of([&] { resolve_class("xyzzyq", c); });
  CHECK(contains(msg, "unknown class 'xyzzyq'"));
  CHECK(contains(msg, "trick classes"));
  CHECK_FALSE(contains(msg, "did you mean"));
  // The embedded model's ten classes are named in the message (`trick classes` lists ImageNet's).
  msg = error_of([&] { resolve_class("pig", fashion_mnist_classes()); });
  CHECK(contains(msg, "unknown class 'pig'"));
  CHECK(contains(msg, "the model's classes: 0 T-shirt/top, 1 Trouser"));
  CHECK(contains(msg, "9 Ankle boot)"));
  CHECK_FALSE(contains(msg, "trick classes"));
  msg = error_of([&] { resolve_class("pig", std::vector<std::string>(30, "x")); });
  CHECK(contains(msg, "the model has 30 classes; give an index 0..29"));
  CHECK(target_rule(" Least-Likely ") == TargetRule::LeastLikely);
  CHECK(target_rule("random") == TargetRule::Random);
  CHECK(target_rule("pig") == TargetRule::None);
  CHECK(target_rule("least likely") == TargetRule::None);  // only the exact words
  // A typo (a letter missing, two swapped, one wrong) gets the nearest names.
  CHECK(contains(error_of([&] { resolve_class("jellyfsh", c); }), "unknown class 'jellyfsh': did you mean 107 (jellyfish)?"));
  CHECK(contains(error_of([&] { resolve_class("porcupnie", c); }), "did you mean 334 (porcupine)?"));
  CHECK(contains(error_of([&] { resolve_class("Sandle", fashion_mnist_classes()); }), "did you mean 5 (Sandal)?"));
  // Many substring matches: listed up to 10, then a count.
  msg = error_of([&] { resolve_class("dog", c); });
  CHECK(contains(msg, "ambiguous"));
  CHECK(contains(msg, "more"));
  CHECK(contains(error_of([&] { resolve_class("   ", c); }), "empty"));
}

TEST_CASE("labels: Fashion-MNIST names resolve with the same rules") {
  const auto& f = fashion_mnist_classes();
  REQUIRE(f.size() == 10);
  CHECK(resolve_class("shirt", f) == 6);  // exact beats the substring in "T-shirt/top"
  CHECK(resolve_class("top", f) == 0);
  CHECK(resolve_class("ankle boot", f) == 9);
  CHECK(resolve_class("9", f) == 9);
  CHECK(contains(error_of([&] { resolve_class("10", f); }), "0..9"));
  CHECK(contains(error_of([&] { resolve_class("s", f); }), "ambiguous"));
}

}  // namespace test_images
