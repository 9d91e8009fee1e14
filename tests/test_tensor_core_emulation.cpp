// The tensor-core math modes emulated on the CPU (kernels/cpu/tensor_core_emulation.h): with
// TF32 or bf16 set, each convolution (forward, data and weight gradient) and GEMM on the CPU
// must equal the fp32 engine run on operands rounded by an independent reference rounding
// (TF32 to nearest with ties away from zero, bf16 ties to even), bit for bit; its error
// against fp32 must be what that rounding costs (not zero: the rounding happened; not more);
// biases, bias gradients, accumulated-into outputs and the first layer's data gradient (as on
// the GPU) stay fp32; kept (frozen) weights give the same bits in every mode; and
// `trick precision` states the modes' error on a real model.
#include <doctest/doctest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/conv.h"
#include "kernels/cpu/prepared.h"
#include "kernels/gemm.h"
#include "kernels/tensor_core_rounding.h"
#include "tensor/random.h"
#include "tests/op_check.h"
#include "tests/reference.h"
#include "tests/test_util.h"

namespace test_tensor_core_emulation {

using namespace trick;

namespace {

// x rounded to `bits` mantissa bits (TF32 10, bf16 7), in double arithmetic on the value (not
// its bit pattern, as the kernels do): to nearest, ties away from zero or to even. Normal
// numbers only, which is all the tests feed it.
float ref_round(float x, int bits, bool ties_away) {
  if (x == 0.f || !std::isfinite(x)) return x;
  int e = 0;
  const double m = std::frexp(static_cast<double>(x), &e);  // |m| in [0.5, 1)
  const double s = std::ldexp(std::fabs(m), bits + 1);      // in [2^bits, 2^(bits+1))
  const double f = std::floor(s), r = s - f;
  const double q = r > 0.5 ? f + 1 : r < 0.5 ? f : ties_away ? f + 1 : (std::fmod(f, 2.0) == 0.0 ? f : f + 1);
  return static_cast<float>(std::copysign(std::ldexp(q, e - bits - 1), static_cast<double>(x)));
}

float ref_round(float x, MathMode m) { return m == MathMode::TF32 ? ref_round(x, 10, true) : ref_round(x, 7, false); }

// A contiguous copy of t with every element rounded by ref_round.
Tensor rounded(const Tensor& t, MathMode m) {
  std::vector<float> v = t.to_vector();
  for (float& f : v) f = ref_round(f, m);
  return Tensor::from_vector(t.shape(), v);
}

double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    den += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

// What rounding both operands of a long dot product costs, relative L2 against fp32, for
// random normal operands: each product's relative error is about (u_a + u_b) / sqrt(3) with
// u = 2^-11 (TF32) or 2^-8 (bf16), independent across the sum, so the result's error is
// of the same size; a wide band around it, which an unrounded (~1e-7) or a worse rounding fails.
struct Band {
  double lo, hi;
};
Band band(MathMode m) { return m == MathMode::TF32 ? Band{5e-5, 2e-3} : Band{4e-4, 1.5e-2}; }

struct ConvCase {
  int64_t n, h, w, c, o, kh, kw;
  int stride, pad;
  bool slice;  // the input a channel slice of a wider tensor
  const char* what;
};

const ConvCase kConvCases[] = {
    {1, 9, 11, 32, 48, 1, 1, 1, 0, false, "1x1"},
    {1, 23, 21, 20, 24, 3, 3, 1, 1, false, "3x3 pad 1 (Winograd's size)"},
    {2, 10, 11, 20, 17, 3, 3, 2, 1, true, "3x3 stride 2, batch 2, a channel slice"},
    {1, 13, 12, 3, 32, 3, 3, 2, 0, false, "3 channels (the first layer)"},
    // Few channels but 1x1: a GEMM on the GPU, whose data gradient is on the tensor cores.
    {2, 9, 11, 3, 40, 1, 1, 1, 0, false, "1x1 on 3 channels"},
};

Conv2dParams params(const ConvCase& k) {
  Conv2dParams p;
  p.stride_h = p.stride_w = k.stride;
  p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = k.pad;
  return p;
}

struct ConvRun {
  std::vector<float> y, dx, dw, db;
};

// Forward, data gradient (accumulating into dx0) and weight gradient (with the bias's) of
// one case, in the math mode in force.
ConvRun run_conv(const ConvCase& k, const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& dy,
                 const Tensor& dx0) {
  const Conv2dParams p = params(k);
  ConvRun r;
  Tensor y = test::nan_tensor(conv2d_output_shape(x.shape(), w.shape(), p));
  conv2d_forward(x, w, b, p, y);
  Tensor dx = dx0.clone();
  conv2d_dgrad(dy, w, p, dx, true);
  Tensor dw = test::nan_tensor(w.shape()), db = test::nan_tensor(Shape{w.dim(0)});
  conv2d_wgrad(x, dy, p, dw, db, false);
  r.y = y.to_vector(), r.dx = dx.to_vector(), r.dw = dw.to_vector(), r.db = db.to_vector();
  return r;
}

}  // namespace

TEST_CASE("tensor-core emulation: CPU convolutions in tf32/bf16 are the fp32 engine on rounded operands, bit for bit") {
  REQUIRE(math_mode() == MathMode::FP32);
  Rng rng(11);
  for (const ConvCase& k : kConvCases) {
    CAPTURE(std::string(k.what));
    const Conv2dParams p = params(k);
    Tensor wide = randn(Shape{k.n, k.h, k.w, k.c + (k.slice ? 7 : 0)}, rng);
    const Tensor x = k.slice ? wide.slice_last(3, 3 + k.c) : wide;
    const Tensor w = randn(Shape{k.o, k.kh, k.kw, k.c}, rng, 0.3f), b = randn(Shape{k.o}, rng);
    const Shape ys = conv2d_output_shape(x.shape(), w.shape(), p);
    const Tensor dy = randn(ys, rng), dx0 = randn(x.shape(), rng);
    const ConvRun fp32 = run_conv(k, x, w, b, dy, dx0);
    for (const MathMode m : {MathMode::TF32, MathMode::BF16}) {
      CAPTURE(std::string(math_mode_name(m)));
      ConvRun emulated;
      {
        MathModeScope scope(m);
        emulated = run_conv(k, x, w, b, dy, dx0);
      }
      // The fp32 engine on operands the reference rounded: the same bits. Only dw's bias
      // gradient differs: it sums the unrounded dy (below).
      const ConvRun on_rounded = run_conv(k, rounded(x, m), rounded(w, m), b, rounded(dy, m), dx0);
      CHECK(emulated.y == on_rounded.y);
      CHECK(emulated.dw == on_rounded.dw);
      // The first layer's data gradient (3 channels) is fp32 on our GPU kernel in every mode
      // (small_c_dgrad, kernels/tensor_core_rounding.h), so it is here.
      const bool pointwise = k.kh == 1 && k.kw == 1 && k.stride == 1 && k.pad == 0;
      const bool fp32_dgrad = k.c <= 4 && !pointwise;
      REQUIRE(small_c_dgrad(k.c, w.numel(), pointwise) == fp32_dgrad);
      CHECK(emulated.dx == (fp32_dgrad ? fp32.dx : on_rounded.dx));
      // The bias gradient is a sum, not a product: fp32 of the unrounded dy, as on the GPU
      // (in another order than the fp32 engine's: fp32-close, not the same bits). Against the
      // double sum, to 1e-6 of the sum of |dy|; a sum of rounded dy is ~1e-4 off (bf16).
      {
        const std::vector<float> dyv = dy.to_vector();
        std::vector<double> sum(k.o, 0.0), mag(k.o, 0.0);
        for (size_t i = 0; i < dyv.size(); ++i) sum[i % k.o] += dyv[i], mag[i % k.o] += std::fabs(dyv[i]);
        for (int64_t o = 0; o < k.o; ++o) CHECK(std::fabs(emulated.db[o] - sum[o]) <= 1e-6 * mag[o]);
      }
      // The forward against the double reference on rounded operands: only fp32 sums apart.
      int64_t oh = 0, ow = 0;
      const std::vector<double> ref_y =
          ref::conv2d(test::to_double(rounded(x, m)), k.n, k.h, k.w, k.c, test::to_double(rounded(w, m)), k.o, k.kh,
                      k.kw, test::to_double(b), p, &oh, &ow);
      const std::vector<float> ref_yf(ref_y.begin(), ref_y.end());
      CHECK(rel_l2(emulated.y, ref_yf) < 1e-6);
      // Against fp32: what the rounding costs, within the band for the mode.
      const Band bd = band(m);
      for (const auto& [name, got, want] :
           {std::tuple<const char*, const std::vector<float>*, const std::vector<float>*>{"y", &emulated.y, &fp32.y},
            {"dw", &emulated.dw, &fp32.dw}}) {
        const double e = rel_l2(*got, *want);
        INFO(name << " rel L2 against fp32 " << e);
        CHECK(e > bd.lo);
        CHECK(e < bd.hi);
      }
      // dx accumulates onto dx0 in fp32 (unrounded): the change is what rounding costs.
      std::vector<float> ddx_e(fp32.dx.size()), ddx_f(fp32.dx.size());
      const std::vector<float> d0 = dx0.to_vector();
      for (size_t i = 0; i < d0.size(); ++i) ddx_e[i] = emulated.dx[i] - d0[i], ddx_f[i] = fp32.dx[i] - d0[i];
      const double edx = rel_l2(ddx_e, ddx_f);
      INFO("dgrad rel L2 against fp32 " << edx);
      CHECK((fp32_dgrad || edx > bd.lo));
      CHECK(edx < bd.hi);
    }
  }
  CHECK(math_mode() == MathMode::FP32);
}

TEST_CASE("tensor-core emulation: kept (frozen) weights give the same bits in every mode, each rounded once") {
  const ConvCase k{1, 23, 21, 20, 24, 3, 3, 1, 1, false, "3x3 pad 1"};
  Rng rng(12);
  const Tensor x = randn(Shape{k.n, k.h, k.w, k.c}, rng), w = randn(Shape{k.o, k.kh, k.kw, k.c}, rng, 0.3f),
               b = randn(Shape{k.o}, rng);
  const Tensor dy = randn(conv2d_output_shape(x.shape(), w.shape(), params(k)), rng), dx0 = randn(x.shape(), rng);
  const MathMode modes[] = {MathMode::FP32, MathMode::TF32, MathMode::BF16};
  std::vector<ConvRun> loose;
  for (const MathMode m : modes) {
    MathModeScope scope(m);
    loose.push_back(run_conv(k, x, w, b, dy, dx0));
  }
  REQUIRE_FALSE(FrozenConvWeights::open());
  {
    FrozenConvWeights frozen;
    // Two rounds through the modes, fp32 between them: no mode may find another's copy.
    for (int round = 0; round < 2; ++round) {
      const cpu::PreparedStats before = cpu::prepared_stats();
      for (int i = 0; i < 3; ++i) {
        CAPTURE(round);
        CAPTURE(std::string(math_mode_name(modes[i])));
        MathModeScope scope(modes[i]);
        const ConvRun kept = run_conv(k, x, w, b, dy, dx0);
        CHECK(kept.y == loose[i].y);
        CHECK(kept.dx == loose[i].dx);
        CHECK(kept.dw == loose[i].dw);
      }
      const cpu::PreparedStats after = cpu::prepared_stats();
      if (round == 0) {
        // tf32 and bf16 keep a rounded copy each, beside what the engines keep of it.
        CHECK(after.builds >= before.builds + 2);
      } else {
        CHECK(after.builds == before.builds);  // the second round finds everything
        CHECK(after.hits > before.hits);
      }
    }
  }
  CHECK(cpu::prepared_stats().entries == 0);
}

TEST_CASE("tensor-core emulation: CPU GEMMs in tf32/bf16 round both operands, every transpose and leading dimension") {
  Rng rng(13);
  struct G {
    int64_t m, n, k;
  };
  for (const G g : {G{1, 37, 70}, G{3, 1000, 96}, G{65, 40, 33}}) {
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      CAPTURE(g.m);
      CAPTURE(g.n);
      CAPTURE(ta);
      CAPTURE(tb);
      const int64_t ar = ta ? g.k : g.m, ac = ta ? g.m : g.k, br = tb ? g.n : g.k, bc = tb ? g.k : g.n;
      const int64_t lda = ac + 3, ldb = bc + 5;  // padded rows: the padding must not be read as data
      const Tensor a = randn(Shape{ar, lda}, rng), b = randn(Shape{br, ldb}, rng), c0 = randn(Shape{g.m, g.n}, rng);
      const auto run = [&](const Tensor& A, int64_t la, const Tensor& B, int64_t lb) {
        Tensor c = c0.clone();
        gemm(Device::cpu(), ta, tb, g.m, g.n, g.k, 0.5f, A.data(), la, B.data(), lb, 1.f, c.data(), g.n);
        return c.to_vector();
      };
      const std::vector<float> fp32 = run(a, lda, b, ldb);
      for (const MathMode m : {MathMode::TF32, MathMode::BF16}) {
        CAPTURE(std::string(math_mode_name(m)));
        std::vector<float> emulated;
        {
          MathModeScope scope(m);
          emulated = run(a, lda, b, ldb);
        }
        // Rounded dense copies (the padding dropped): the fp32 GEMM on them gives the same bits.
        std::vector<float> ad, bd;
        const std::vector<float> av = a.to_vector(), bv = b.to_vector();
        for (int64_t r = 0; r < ar; ++r)
          for (int64_t j = 0; j < ac; ++j) ad.push_back(ref_round(av[r * lda + j], m));
        for (int64_t r = 0; r < br; ++r)
          for (int64_t j = 0; j < bc; ++j) bd.push_back(ref_round(bv[r * ldb + j], m));
        CHECK(emulated == run(Tensor::from_vector(Shape{ar, ac}, ad), ac, Tensor::from_vector(Shape{br, bc}, bd), bc));
        // beta * C stays fp32: subtract it, and the products' change is what rounding costs.
        const std::vector<float> c0v = c0.to_vector();
        std::vector<float> pe(fp32.size()), pf(fp32.size());
        for (size_t i = 0; i < fp32.size(); ++i) pe[i] = emulated[i] - c0v[i], pf[i] = fp32[i] - c0v[i];
        const double e = rel_l2(pe, pf);
        INFO("rel L2 against fp32 " << e);
        CHECK(e > band(m).lo);
        CHECK(e < band(m).hi);
      }
    }
  }
}

TEST_CASE("tensor-core emulation: trick precision states each mode's error against fp32 on the embedded model") {
  int status = -1;
  const std::string out = trick_test::run_capture(
      std::string(TRICK_BINARY) +
          " precision data/samples/fashion/9_ankle_boot.png data/samples/fashion/1_trouser.png --target Sandal "
          "--device cpu --threads 1 --json 2>&1",
      &status);
  INFO(out);
  REQUIRE(status == 0);
  std::istringstream lines(out);
  int images = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] != '{') continue;
    const nlohmann::json j = nlohmann::json::parse(line);
    ++images;
    CHECK(j["target"] == 5);
    CHECK(j["conv"] == "cpu (emulated)");
    REQUIRE(j["modes"].size() == 2);
    const nlohmann::json &tf32 = j["modes"][0], &bf16 = j["modes"][1];
    CHECK(tf32["mode"] == "tf32");
    CHECK(bf16["mode"] == "bf16");
    // The rounding moved the logits (an fp32 rerun gives exactly 0), bf16 (7 bits) more than
    // TF32 (10 bits). The gradient moves more: ReLU and max-pool decisions flip (measured
    // 2026-12-01: logits 2.4e-4 and 4.1e-4 TF32, 6.3e-3 and 5.4e-3 bf16; gradient 0.057 and
    // 0.055 TF32, 0.13 and 0.14 bf16, cosine 0.998 and 0.99).
    CHECK(tf32["logits_rel_l2"].get<double>() > 1e-6);
    CHECK(tf32["logits_rel_l2"].get<double>() < 3e-3);
    CHECK(bf16["logits_rel_l2"].get<double>() > 2 * tf32["logits_rel_l2"].get<double>());
    CHECK(bf16["logits_rel_l2"].get<double>() < 3e-2);
    CHECK(tf32["grad_rel_l2"].get<double>() > 1e-6);
    CHECK(tf32["grad_rel_l2"].get<double>() < 0.2);
    CHECK(bf16["grad_rel_l2"].get<double>() < 0.4);
    CHECK(tf32["top1_same"] == true);
    CHECK(tf32["grad_cosine"].get<double>() > 0.99);
    CHECK(bf16["grad_cosine"].get<double>() > 0.95);
    CHECK(tf32["grad_sign_agreement"].get<double>() > 0.95);
    CHECK(tf32["grad_sign_agreement"].get<double>() <= 1.0);
  }
  CHECK(images == 2);
  // The text table names what it compared and has a row per mode.
  const std::string text = trick_test::run_capture(
      std::string(TRICK_BINARY) + " precision data/samples/fashion/9_ankle_boot.png --device cpu --modes bf16 2>&1",
      &status);
  CHECK(status == 0);
  CHECK(trick_test::contains(text, "emulated on the CPU"));
  CHECK(trick_test::contains(text, "\n  bf16 "));
  CHECK_FALSE(trick_test::contains(text, "\n  tf32 "));
  // fp32 is the reference, not a mode; an unknown mode is refused.
  for (const char* bad : {"fp32", "fp16", "tf32,tf32", ""}) {
    CAPTURE(bad);
    const std::string e = trick_test::run_capture(
        std::string(TRICK_BINARY) + " precision data/samples/fashion/9_ankle_boot.png --modes '" + bad + "' 2>&1",
        &status);
    CHECK(status == 1);
    CHECK(trick_test::contains(e, "error: --modes"));
  }
}

}  // namespace test_tensor_core_emulation
