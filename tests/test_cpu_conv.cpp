// The CPU convolution engines (kernels/cpu/sgemm_conv.h: the implicit-GEMM AVX2 kernels, and
// the OpenBLAS im2col path) against plain-loop double references, on shapes that reach every
// path of the implicit-GEMM driver: channel counts that are and are not multiples of the
// 16-wide panels, pixel counts that leave partial 6-row tiles, K longer than one 256-long
// chunk (segments that straddle taps), one pixel block (B packed chunk by chunk) and several
// (B packed first), strides 1 and 2 (dgrad by stride phases, phases no
// tap reaches), asymmetric padding, batch > 1, channel-slice views, accumulation, im2col in
// more than one chunk; and the weight gradient (OpenBLAS on both engines). Also the
// thread pool those kernels run on (kernels/cpu/parallel.h), and the few-row GEMM path.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <memory>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/conv.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/prepared.h"
#include "kernels/cpu/sgemm_conv.h"
#include "kernels/cpu/sgemm_kernel.h"
#include "kernels/gemm.h"
#include "layers/module.h"
#include "layers/optim.h"
#include "tests/op_check.h"
#include "tests/reference.h"

namespace test_cpu_conv {

using namespace trick;
using test::expect_close;
using test::to_double;

namespace {

struct Case {
  int64_t n, h, w, c, o, kh, kw;
  int sh, sw, pt, pb, pl, pr;
  const char* what;
};

const Case kCases[] = {
    {1, 9, 11, 32, 48, 1, 1, 1, 1, 0, 0, 0, 0, "1x1, 99 pixels (partial tile), 3 panels"},
    {2, 5, 7, 40, 20, 1, 1, 1, 1, 0, 0, 0, 0, "1x1, batch 2, 20 outputs (partial panel)"},
    {1, 6, 6, 300, 33, 1, 1, 1, 1, 0, 0, 0, 0, "1x1, K = 300 (two chunks)"},
    {1, 8, 9, 24, 35, 3, 3, 1, 1, 1, 1, 1, 1, "3x3 pad 1, 24 channels (chunks straddle taps)"},
    {2, 7, 6, 17, 16, 3, 3, 1, 1, 0, 0, 0, 0, "3x3 no padding, batch 2"},
    {1, 9, 8, 20, 18, 1, 7, 1, 1, 0, 0, 3, 3, "1x7 pad (0, 3)"},
    {1, 8, 5, 19, 21, 7, 1, 1, 1, 3, 3, 0, 0, "7x1 pad (3, 0)"},
    {1, 11, 10, 16, 24, 5, 5, 1, 1, 2, 2, 2, 2, "5x5 pad 2"},
    {1, 11, 9, 18, 40, 3, 3, 2, 2, 0, 0, 0, 0, "3x3 stride 2"},
    {2, 10, 11, 20, 17, 3, 3, 2, 2, 1, 1, 1, 1, "3x3 stride 2 pad 1, batch 2"},
    {1, 9, 9, 16, 16, 1, 1, 2, 2, 0, 0, 0, 0, "1x1 stride 2 (phases no tap reaches)"},
    {1, 10, 9, 21, 19, 3, 2, 2, 1, 1, 0, 0, 1, "3x2 strides (2, 1), asymmetric padding"},
    {1, 19, 18, 20, 24, 3, 3, 1, 1, 1, 1, 1, 1, "3x3 pad 1, 342 pixels (several pixel blocks, B packed first)"},
    {2, 30, 25, 17, 20, 3, 3, 2, 2, 1, 1, 1, 1, "3x3 stride 2, batch 2, 390 output pixels (B packed first)"},
    {1, 13, 12, 3, 32, 3, 3, 2, 2, 0, 0, 0, 0, "3 channels (the first layer: explicit im2col)"},
    {1, 6, 7, 5, 20, 3, 3, 1, 1, 1, 1, 1, 1, "5 channels, pad 1"},
    {1, 30, 30, 300, 8, 3, 3, 1, 1, 1, 1, 1, 1, "Winograd forward (F(4x4) when chosen per layer; dgrad: 8 channels, direct), 300 channels, 900 pixels (OpenBLAS im2col in two chunks)"},
    {1, 200, 200, 3, 8, 3, 3, 1, 1, 1, 1, 1, 1, "3 channels, 40000 pixels (explicit im2col in two chunks)"},
    // Winograd (3x3 stride 1, >= 16 channels, >= 384 output pixels): odd sizes (tiles
    // that overhang the edge), channel counts that leave the 8-wide vectors a tail, a partial
    // panel, padding 2 (the data gradient's is then 0), no padding, K in two 256-long chunks.
    {1, 23, 21, 20, 24, 3, 3, 1, 1, 1, 1, 1, 1, "Winograd: 3x3 pad 1, 23x21 (tiles over the edge)"},
    {2, 17, 16, 33, 17, 3, 3, 1, 1, 0, 0, 0, 0, "Winograd: no padding, batch 2, 33 -> 17 channels (tails)"},
    {1, 20, 22, 24, 40, 3, 3, 1, 1, 2, 0, 0, 1, "Winograd: asymmetric padding (2, 0, 0, 1)"},
    {1, 20, 21, 300, 20, 3, 3, 1, 1, 1, 1, 1, 1, "Winograd: 300 channels (K in two chunks)"},
    {1, 33, 35, 20, 24, 3, 3, 1, 1, 1, 1, 1, 1, "Winograd: 33x35, 81 tiles of 4x4 (F(4x4) when chosen per layer)"},
};

Conv2dParams params(const Case& k, bool relu) {
  Conv2dParams p;
  p.stride_h = k.sh, p.stride_w = k.sw;
  p.pad_top = k.pt, p.pad_bottom = k.pb, p.pad_left = k.pl, p.pad_right = k.pr;
  p.relu = relu;
  return p;
}

// dx[n, iy, ix, c] = sum of dy[n, oy, ox, o] * w[o, i, j, c] over the (oy, ox, i, j) with
// oy * sh - pt + i = iy and ox * sw - pl + j = ix: the forward's definition, scattered.
std::vector<double> ref_dgrad(const std::vector<double>& dy, const std::vector<double>& w, const Case& k,
                              int64_t oh, int64_t ow) {
  std::vector<double> dx(static_cast<size_t>(k.n * k.h * k.w * k.c), 0.0);
  for (int64_t b = 0; b < k.n; ++b)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox)
        for (int64_t o = 0; o < k.o; ++o)
          for (int64_t i = 0; i < k.kh; ++i)
            for (int64_t j = 0; j < k.kw; ++j) {
              const int64_t iy = oy * k.sh - k.pt + i, ix = ox * k.sw - k.pl + j;
              if (iy < 0 || iy >= k.h || ix < 0 || ix >= k.w) continue;
              const double g = dy[((b * oh + oy) * ow + ox) * k.o + o];
              for (int64_t c = 0; c < k.c; ++c)
                dx[((b * k.h + iy) * k.w + ix) * k.c + c] += g * w[((o * k.kh + i) * k.kw + j) * k.c + c];
            }
  return dx;
}

// dw[o, i, j, c] = sum of dy[n, oy, ox, o] * x[n, oy * sh - pt + i, ox * sw - pl + j, c] over
// (n, oy, ox) inside the input; db[o] = sum of dy[n, oy, ox, o].
void ref_wgrad(const std::vector<double>& x, const std::vector<double>& dy, const Case& k, int64_t oh, int64_t ow,
               std::vector<double>* dw, std::vector<double>* db) {
  dw->assign(static_cast<size_t>(k.o * k.kh * k.kw * k.c), 0.0);
  db->assign(static_cast<size_t>(k.o), 0.0);
  for (int64_t b = 0; b < k.n; ++b)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox)
        for (int64_t o = 0; o < k.o; ++o) {
          const double g = dy[((b * oh + oy) * ow + ox) * k.o + o];
          (*db)[o] += g;
          for (int64_t i = 0; i < k.kh; ++i)
            for (int64_t j = 0; j < k.kw; ++j) {
              const int64_t iy = oy * k.sh - k.pt + i, ix = ox * k.sw - k.pl + j;
              if (iy < 0 || iy >= k.h || ix < 0 || ix >= k.w) continue;
              for (int64_t c = 0; c < k.c; ++c)
                (*dw)[((o * k.kh + i) * k.kw + j) * k.c + c] += g * x[((b * k.h + iy) * k.w + ix) * k.c + c];
            }
        }
}

// Channels [from, to) of every row of t, as doubles.
std::vector<double> columns(const Tensor& t, int64_t from, int64_t to) {
  const std::vector<float> v = t.to_vector();
  const int64_t cols = t.dim(t.ndim() - 1), rows = t.numel() / cols;
  std::vector<double> out;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = from; c < to; ++c) out.push_back(v[r * cols + c]);
  return out;
}

// Restores the Winograd tile a test forced (0: each engine's own choice), also when it fails.
struct TileScope {
  int saved = cpu::winograd_tile();
  explicit TileScope(int m) { cpu::set_winograd_tile(m); }
  ~TileScope() { cpu::set_winograd_tile(saved); }
};

// Restores the engine a test changed.
struct EngineScope {
  cpu::ConvEngine saved = cpu::conv_engine();
  explicit EngineScope(cpu::ConvEngine e) { cpu::set_conv_engine(e); }
  ~EngineScope() { cpu::set_conv_engine(saved); }
};

// Whether the Winograd engines run a case's forward or data gradient by Winograd.
bool by_winograd(const Case& k, bool dgrad) {
  const Conv2dParams p = params(k, false);
  const Shape ys = conv2d_output_shape(Shape{k.n, k.h, k.w, k.c}, Shape{k.o, k.kh, k.kw, k.c}, p);
  const int64_t oh = dgrad ? k.h : ys[1], ow = dgrad ? k.w : ys[2];
  return cpu::winograd_takes(k.kh, k.kw, p, dgrad ? k.o : k.c, k.n, oh, ow);
}

void check_engine(cpu::ConvEngine engine, int threads) {
  EngineScope scope(engine);
  REQUIRE(cpu::conv_engine() == engine);
  const int saved_threads = num_threads();
  set_num_threads(threads);
  Rng rng(21);
  int winograd_cases = 0;
  for (const Case& k : kCases) {
    CAPTURE(k.what);
    CAPTURE(threads);
    // The cases named for Winograd are the ones it takes, forward or dgrad; no other is.
    const bool named = std::string(k.what).rfind("Winograd", 0) == 0;
    REQUIRE((by_winograd(k, false) || by_winograd(k, true)) == named);
    winograd_cases += named;
    const bool winograd_engine = cpu::has_winograd(engine);
    if (winograd_engine && !named) continue;  // the direct engine's case, run by its own test
    const double tol = 1e-5 * std::sqrt(static_cast<double>(k.kh * k.kw * std::max(k.c, k.o)) / 16.0);
    const Conv2dParams p = params(k, true);
    // The input is a channel slice of a wider tensor; the output goes to a slice of a wider
    // block whose other channels hold NaN, which must survive.
    Tensor wide_x = randn(Shape{k.n, k.h, k.w, k.c + 3}, rng);
    Tensor x = wide_x.slice_last(1, 1 + k.c);
    Tensor w = randn(Shape{k.o, k.kh, k.kw, k.c}, rng, 0.3f), b = randn(Shape{k.o}, rng);
    const Shape ys = conv2d_output_shape(x.shape(), w.shape(), p);
    Tensor block = test::nan_tensor(Shape{ys[0], ys[1], ys[2], k.o + 5});
    Tensor y = block.slice_last(2, 2 + k.o);
    conv2d_forward(x, w, b, p, y);
    int64_t oh = 0, ow = 0;
    const auto want = ref::conv2d(to_double(x), k.n, k.h, k.w, k.c, to_double(w), k.o, k.kh, k.kw, to_double(b), p,
                                  &oh, &ow);
    expect_close(y, want, std::string("forward ") + k.what, 1e-4, tol);
    for (double v : columns(block, 0, 2)) REQUIRE(std::isnan(v));
    for (double v : columns(block, 2 + k.o, k.o + 5)) REQUIRE(std::isnan(v));

    // Without bias or ReLU, into a contiguous output.
    Conv2dParams q = params(k, false);
    Tensor y2 = test::nan_tensor(ys);
    conv2d_forward(x, w, Tensor(), q, y2);
    expect_close(y2, ref::conv2d(to_double(x), k.n, k.h, k.w, k.c, to_double(w), k.o, k.kh, k.kw, {}, q, &oh, &ow),
                 std::string("forward, no bias or relu ") + k.what, 1e-4, tol);

    // dgrad: written (poisoned first), then accumulated onto existing values of a wider tensor.
    Tensor wide_dy = randn(Shape{ys[0], ys[1], ys[2], k.o + 2}, rng);
    Tensor dy = wide_dy.slice_last(2, 2 + k.o);
    const auto want_dx = ref_dgrad(to_double(dy), to_double(w), k, oh, ow);
    Tensor dx = test::nan_tensor(x.shape());
    conv2d_dgrad(dy, w, q, dx, false);
    expect_close(dx, want_dx, std::string("dgrad ") + k.what, 1e-4, tol);

    Tensor wide_dx = randn(Shape{k.n, k.h, k.w, k.c + 4}, rng);
    const std::vector<double> before = columns(wide_dx, 0, k.c + 4);
    Tensor dx_slice = wide_dx.slice_last(3, 3 + k.c);
    conv2d_dgrad(dy, w, q, dx_slice, true);
    std::vector<double> want_acc = want_dx;
    for (size_t i = 0; i < want_acc.size(); ++i) want_acc[i] += before[(i / k.c) * (k.c + 4) + 3 + i % k.c];
    expect_close(dx_slice.contiguous(), want_acc, std::string("dgrad accumulated ") + k.what, 1e-4, tol);
    const std::vector<double> after = columns(wide_dx, 0, k.c + 4);
    for (size_t r = 0; r < after.size() / (k.c + 4); ++r)
      for (int64_t c : {int64_t{0}, int64_t{1}, int64_t{2}, k.c + 3})
        REQUIRE(after[r * (k.c + 4) + c] == before[r * (k.c + 4) + c]);

    if (named && winograd_engine) {
      // The Winograd kernels called directly: they take the case, and agree with the engine.
      Tensor y3 = test::nan_tensor(ys), dx3 = test::nan_tensor(x.shape());
      // The rule bench-conv reports is the one that ran: F(4x4) only on the 4x4-named case
      // under the engine's own choice, and wherever forced.
      const int tile = cpu::winograd_tile_for(engine, k.kh, k.kw, q, k.c, k.n, ys[1], ys[2]);
      if (by_winograd(k, false))
        CHECK(tile == (cpu::winograd_tile() ? cpu::winograd_tile()
                       : engine == cpu::ConvEngine::Winograd4 && std::string(k.what).find("F(4x4)") != std::string::npos
                           ? 4
                           : 2));
      REQUIRE(cpu::winograd_conv2d_forward(x, w, Tensor(), q, y3) == by_winograd(k, false));
      REQUIRE(cpu::winograd_conv2d_dgrad(dy, w, q, dx3, false) == by_winograd(k, true));
      if (by_winograd(k, false)) CHECK(y3.to_vector() == y2.to_vector());
      if (by_winograd(k, true)) CHECK(dx3.to_vector() == dx.to_vector());
    }

    // wgrad (OpenBLAS on either engine) from the channel slices x and dy: written (poisoned
    // first), then accumulated onto existing values. The sums run over every output pixel.
    std::vector<double> want_dw, want_db;
    ref_wgrad(to_double(x), to_double(dy), k, oh, ow, &want_dw, &want_db);
    const double wtol = 1e-5 * std::sqrt(static_cast<double>(k.n * oh * ow) / 16.0);
    Tensor dw = test::nan_tensor(w.shape()), db = test::nan_tensor(Shape{k.o});
    conv2d_wgrad(x, dy, q, dw, db, false);
    expect_close(dw, want_dw, std::string("wgrad ") + k.what, 1e-4, wtol);
    expect_close(db, want_db, std::string("wgrad bias ") + k.what, 1e-4, wtol);
    Tensor dw_acc = randn(w.shape(), rng), db_acc = randn(Shape{k.o}, rng);
    std::vector<double> want_dw_acc = to_double(dw_acc), want_db_acc = to_double(db_acc);
    for (size_t i = 0; i < want_dw_acc.size(); ++i) want_dw_acc[i] += want_dw[i];
    for (size_t i = 0; i < want_db_acc.size(); ++i) want_db_acc[i] += want_db[i];
    conv2d_wgrad(x, dy, q, dw_acc, db_acc, true);
    expect_close(dw_acc, want_dw_acc, std::string("wgrad accumulated ") + k.what, 1e-4, wtol);
    expect_close(db_acc, want_db_acc, std::string("wgrad bias accumulated ") + k.what, 1e-4, wtol);
  }
  CHECK(winograd_cases == 6);
  set_num_threads(saved_threads);
}

}  // namespace

TEST_CASE("cpu conv: the implicit-GEMM engine against the double reference, 1 and 2 threads") {
  if (!cpu::sgemm::kernel_supported()) {
    MESSAGE("this CPU has no AVX2/FMA: only the OpenBLAS engine runs here");
    return;
  }
  check_engine(cpu::ConvEngine::Packed, 1);
  check_engine(cpu::ConvEngine::Packed, 2);
}

TEST_CASE("cpu conv: the Winograd engines (F(2x2, 3x3) and F(4x4, 3x3)) against the double reference") {
  if (!cpu::sgemm::kernel_supported()) {
    MESSAGE("this CPU has no AVX2/FMA: only the OpenBLAS engine runs here");
    return;
  }
  // Each tile forced on every case Winograd takes, then each engine's own choice.
  for (int m : {2, 4, 0}) {
    CAPTURE(m);
    TileScope tile(m);
    REQUIRE(cpu::winograd_tile() == m);
    for (cpu::ConvEngine e : {cpu::ConvEngine::Winograd, cpu::ConvEngine::Winograd4}) {
      if (m != 0 && e == cpu::ConvEngine::Winograd4) continue;  // the same as Winograd
      check_engine(e, 1);
      check_engine(e, 2);
    }
  }
}

TEST_CASE("cpu conv: frozen weights (kept packed and transformed across calls) give the same bits") {
  if (!cpu::sgemm::kernel_supported()) {
    MESSAGE("this CPU has no AVX2/FMA: only the OpenBLAS engine runs here, and it keeps nothing");
    return;
  }
  REQUIRE_FALSE(FrozenConvWeights::open());
  REQUIRE(cpu::prepared_stats().entries == 0);
  for (cpu::ConvEngine e : {cpu::ConvEngine::Winograd, cpu::ConvEngine::Winograd4, cpu::ConvEngine::Packed}) {
    EngineScope engine(e);
    CAPTURE(std::string(cpu::conv_engine_key(e)));
    Rng rng(5);
    for (const Case& k : kCases) {
      CAPTURE(std::string(k.what));
      const Conv2dParams p = params(k, true);
      Tensor x = randn(Shape{k.n, k.h, k.w, k.c}, rng);
      Tensor w = randn(Shape{k.o, k.kh, k.kw, k.c}, rng, 0.3f), b = randn(Shape{k.o}, rng);
      const Shape ys = conv2d_output_shape(x.shape(), w.shape(), p);
      Tensor dy = randn(ys, rng);
      const auto run = [&](std::vector<float>* y, std::vector<float>* dx) {
        Tensor ty = test::nan_tensor(ys), tdx = test::nan_tensor(x.shape());
        conv2d_forward(x, w, b, p, ty);
        conv2d_dgrad(dy, w, p, tdx, false);
        *y = ty.to_vector(), *dx = tdx.to_vector();
      };
      std::vector<float> y0, dx0, y1, dx1, y2, dx2;
      run(&y0, &dx0);
      const cpu::PreparedStats before = cpu::prepared_stats();
      {
        FrozenConvWeights frozen;
        REQUIRE(FrozenConvWeights::open());
        run(&y1, &dx1);
        const cpu::PreparedStats first = cpu::prepared_stats();
        run(&y2, &dx2);
        const cpu::PreparedStats second = cpu::prepared_stats();
        // The first calls build (the forward, each stride phase of the data gradient; the
        // explicit im2col's later chunks find the first's), the second ones only find.
        CHECK(first.builds >= before.builds + 2);
        CHECK(second.builds == first.builds);
        CHECK(second.hits - first.hits == (first.builds - before.builds) + (first.hits - before.hits));
        CHECK(first.entries == first.builds - before.builds);
        CHECK(first.bytes > 0);
      }
      CHECK(cpu::prepared_stats().entries == 0);
      CHECK(cpu::prepared_stats().bytes == 0);
      CHECK(y1 == y0);
      CHECK(y2 == y0);
      CHECK(dx1 == dx0);
      CHECK(dx2 == dx0);
    }
  }
  CHECK_FALSE(FrozenConvWeights::open());
}

TEST_CASE("cpu conv: kept weights stay theirs: new weights at a freed address are not mistaken for them") {
  if (!cpu::sgemm::kernel_supported()) return;
  // Weights of 80 KB: blocks of 64 KB and more come from the host cache (tensor/device.cpp),
  // which hands a freed block of the same size straight back.
  const Case k = {1, 6, 7, 128, 160, 1, 1, 1, 1, 0, 0, 0, 0, "1x1, 128 -> 160 channels"};
  const Conv2dParams p = params(k, false);
  Rng rng(8);
  Tensor x = randn(Shape{k.n, k.h, k.w, k.c}, rng);
  const Shape ws{k.o, k.kh, k.kw, k.c};
  const Shape ys = conv2d_output_shape(x.shape(), ws, p);
  std::vector<float> want;
  Tensor w2_values = randn(ws, rng);
  {
    Tensor y = test::nan_tensor(ys);
    conv2d_forward(x, w2_values, Tensor(), p, y);
    want = y.to_vector();
  }
  FrozenConvWeights frozen;
  const float* first_address = nullptr;
  Tensor y = test::nan_tensor(ys);
  {
    Tensor w1 = Tensor::empty(ws);
    w1.copy_from(randn(ws, rng));
    first_address = w1.data();
    conv2d_forward(x, w1, Tensor(), p, y);
  }  // w1's last view outside the cache goes
  // New weights of the same size: the allocator would hand w1's block back soon, were it free.
  std::vector<Tensor> others;
  Tensor w2;
  for (int i = 0; i < 64 && !w2.defined(); ++i) {
    Tensor t = Tensor::empty(ws);
    (t.data() == first_address ? w2 : others.emplace_back()) = t;
  }
  CHECK_FALSE(w2.defined());  // the cache holds w1's memory
  if (!w2.defined()) w2 = Tensor::empty(ws);
  w2.copy_from(w2_values);
  conv2d_forward(x, w2, Tensor(), p, y);
  CHECK(y.to_vector() == want);
}

TEST_CASE("cpu conv: kept weights are let go when the last frozen scope closes") {
  if (!cpu::sgemm::kernel_supported()) return;
  const Case& k = kCases[0];
  const Conv2dParams p = params(k, false);
  Rng rng(9);
  Tensor x = randn(Shape{k.n, k.h, k.w, k.c}, rng);
  const Shape ws{k.o, k.kh, k.kw, k.c};
  Tensor y = test::nan_tensor(conv2d_output_shape(x.shape(), ws, p));
  // Weights over memory of our own, whose keeper we can watch: it goes when the last view does.
  std::vector<float> memory = randn(ws, rng).to_vector();
  std::weak_ptr<void> watch;
  {
    FrozenConvWeights outer;
    {
      FrozenConvWeights inner;  // scopes nest: the inner one's end keeps what the outer still covers
      auto keeper = std::make_shared<int>(0);
      watch = keeper;
      Tensor w = Tensor::wrap(ws, memory.data(), keeper);
      keeper.reset();
      conv2d_forward(x, w, Tensor(), p, y);
      conv2d_dgrad(y, w, p, x, false);
    }
    CHECK(cpu::prepared_stats().entries >= 2);
    CHECK_FALSE(watch.expired());  // the kept copies still hold the weights
  }
  CHECK(cpu::prepared_stats().entries == 0);
  CHECK(cpu::prepared_stats().bytes == 0);
  CHECK(watch.expired());  // and nothing holds them now (no entry outlives the scopes)
}

TEST_CASE("cpu conv: an optimizer step or a weight load while weights are declared frozen is an error") {
  Var v(Tensor::full(Shape{2}, 1.f), true);
  v.state()->grad = Tensor::full(Shape{2}, 1.f);
  auto opt = make_optimizer("sgd", {{"v", &v, 0.f}}, OptimizerOptions{});
  {
    FrozenConvWeights frozen;
    CHECK_THROWS_WITH_AS(opt->step(), doctest::Contains("declared frozen"), std::exception);
    Conv2d conv(Conv2dOptions{2, 3, 1, 1, 1, 0, 0, false, false});
    CHECK_THROWS_WITH_AS(conv.load_state_dict(conv.state_dict()), doctest::Contains("declared frozen"),
                         std::exception);
  }
  opt->step();
  CHECK(v.value().to_vector() == std::vector<float>{0.9f, 0.9f});
}

TEST_CASE("cpu conv: the OpenBLAS engine (the fallback) against the double reference") {
  check_engine(cpu::ConvEngine::Blas, 2);
}

TEST_CASE("cpu conv: the engine is Winograd by default where the CPU has AVX2 and FMA") {
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const char* env = std::getenv("TRICK_CPU_CONV");
  cpu::ConvEngine want = cpu::ConvEngine::Winograd;
  if (env) cpu::parse_conv_engine(env, &want);
  CHECK(cpu::conv_engine() == (avx2 ? want : cpu::ConvEngine::Blas));
  for (cpu::ConvEngine e :
       {cpu::ConvEngine::Winograd, cpu::ConvEngine::Winograd4, cpu::ConvEngine::Packed, cpu::ConvEngine::Blas}) {
    EngineScope scope(e);
    CHECK(cpu::conv_engine() == (avx2 ? e : cpu::ConvEngine::Blas));
    cpu::ConvEngine parsed = cpu::ConvEngine::Blas;
    CHECK(cpu::parse_conv_engine(cpu::conv_engine_key(e), &parsed));
    CHECK(parsed == e);
  }
  CHECK_FALSE(cpu::parse_conv_engine("fast", &want));
  EngineScope scope(cpu::ConvEngine::Winograd);
  CHECK(std::string(cpu::conv_engine_name()) == (avx2 ? "packed-avx2+winograd" : "openblas"));
}

TEST_CASE("cpu parallel_for: every index exactly once, on any thread count, nested and throwing") {
  const int saved = num_threads();
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    CAPTURE(threads);
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1000}}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      for (auto& h : hits) h = 0;
      cpu::parallel_for(n, [&](int64_t i) {
        // A nested call runs inline on the same thread.
        cpu::parallel_for(2, [&](int64_t j) { hits[i] += static_cast<int>(j); });
        hits[i] += 1;
      });
      for (int64_t i = 0; i < n; ++i) REQUIRE(hits[i] == 2);
    }
    std::vector<std::atomic<int>> seen(100);
    for (auto& s : seen) s = 0;
    cpu::parallel_range(100, 3, [&](int64_t b, int64_t e) {
      REQUIRE(b < e);
      for (int64_t i = b; i < e; ++i) seen[i] += 1;
    });
    for (auto& s : seen) REQUIRE(s == 1);
    std::atomic<int> ran{0};
    CHECK_THROWS_WITH_AS(cpu::parallel_for(50,
                                           [&](int64_t i) {
                                             ++ran;
                                             if (i == 17) throw std::runtime_error("item 17 failed");
                                           }),
                         "item 17 failed", std::runtime_error);
    CHECK(ran == 50);  // the other items still ran; the pool is usable afterwards
    std::atomic<int64_t> sum{0};
    cpu::parallel_for(10, [&](int64_t i) { sum += i; });
    CHECK(sum == 45);
  }
  set_num_threads(saved);
}

TEST_CASE("cpu gemm: a few rows (the pool's path) and more (OpenBLAS) against the double reference") {
  Rng rng(23);
  const int saved = num_threads();
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (int64_t M : {1, 2, 4, 5})
      for (int64_t K : {3, 37, 300})
        for (int tb = 0; tb < 2; ++tb)
          for (float beta : {0.f, 2.f}) {
            CAPTURE(threads);
            CAPTURE(M);
            CAPTURE(K);
            CAPTURE(tb);
            CAPTURE(beta);
            const int64_t N = 1000, lda = K + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
            Tensor A = randn(Shape{M, lda}, rng), B = randn(Shape{tb ? N : K, ldb}, rng);
            Tensor C = beta == 0.f ? test::nan_tensor(Shape{M, ldc}) : randn(Shape{M, ldc}, rng);
            // Columns past N are set to a value that must survive.
            for (int64_t i = 0; i < M; ++i) C.data()[i * ldc + N] = C.data()[i * ldc + N + 1] = 7.f;
            const auto a = to_double(A), b = to_double(B), c0 = to_double(C);
            gemm(Device::cpu(), false, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
            std::vector<double> want(static_cast<size_t>(M * ldc));
            for (int64_t i = 0; i < M; ++i)
              for (int64_t j = 0; j < ldc; ++j) {
                if (j >= N) {
                  want[i * ldc + j] = 7.0;
                  continue;
                }
                double s = 0;
                for (int64_t k = 0; k < K; ++k) s += a[i * lda + k] * (tb ? b[j * ldb + k] : b[k * ldb + j]);
                want[i * ldc + j] = 0.5 * s + (beta == 0.f ? 0.0 : beta * c0[i * ldc + j]);
              }
            expect_close(C, want, "gemm", 1e-4, 1e-5);
          }
  }
  set_num_threads(saved);
}

}  // namespace test_cpu_conv
