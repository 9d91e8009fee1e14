// Fashion-MNIST: the IDX reader (against a second reading with zlib here, and on broken
// files built byte by byte), the small Inception (shapes, names, folding), the optimisers
// (against the update formulas worked out here), training that learns, bit-exact resume,
// and the shipped model (its recorded accuracy, its sample images).
#include <doctest/doctest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "kernels/gemm.h"
#include "layers/optim.h"
#include "models/fashion_inception.h"
#include "models/labels.h"
#include "models/safetensors.h"
#include "models/zoo.h"
#include "tools/lib/fashion_train.h"
#include "tools/lib/idx.h"
#include "tools/lib/image.h"
#include "tools/lib/run_model.h"

#include "tests/test_util.h"

namespace test_fashion {

using namespace trick;
using namespace trick_test;

namespace {

const std::string kData = kFashionMnistDir;


// gzip-compresses bytes with zlib's deflate (a gzip wrapper: windowBits 15 + 16).
std::string gzip(const std::string& raw) {
  z_stream z{};
  REQUIRE(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::string out(deflateBound(&z, raw.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  z.avail_in = static_cast<uInt>(raw.size());
  z.next_out = reinterpret_cast<Bytef*>(&out[0]);
  z.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// The whole decompressed file, read independently of tools/lib/idx.cpp (zlib's inflate).
std::string gunzip_file(const std::string& path) {
  const std::string comp = read_bytes(path);
  REQUIRE(comp.size() > 18);
  z_stream z{};
  REQUIRE(inflateInit2(&z, 15 + 16) == Z_OK);
  std::string out;
  char buf[1 << 16];
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(comp.data()));
  z.avail_in = static_cast<uInt>(comp.size());
  int ret = Z_OK;
  while (ret != Z_STREAM_END) {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    ret = inflate(&z, Z_NO_FLUSH);
    REQUIRE((ret == Z_OK || ret == Z_STREAM_END));
    out.append(buf, sizeof buf - z.avail_out);
  }
  inflateEnd(&z);
  return out;
}

std::string be32(uint32_t v) {
  std::string s(4, '\0');
  for (int k = 0; k < 4; ++k) s[k] = static_cast<char>((v >> (24 - 8 * k)) & 0xff);
  return s;
}

std::string idx_images(uint32_t n, uint32_t rows, uint32_t cols, uint32_t magic = 0x803) {
  std::string s = be32(magic) + be32(n) + be32(rows) + be32(cols);
  for (uint32_t i = 0; i < n * rows * cols; ++i) s += static_cast<char>((i * 37) & 0xff);
  return s;
}

std::string idx_labels(uint32_t n, int bad_at = -1) {
  std::string s = be32(0x801) + be32(n);
  for (uint32_t i = 0; i < n; ++i) s += static_cast<char>(static_cast<int>(i) == bad_at ? 10 : i % 10);
  return s;
}

// Runs f, which must throw trick::Error; returns the message.
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("expected a trick::Error");
  return "";
}


// Every tensor of two safetensors files, bit for bit; `what` names the comparison.
void require_same_tensors(const std::string& a, const std::string& b) {
  const SafetensorsFile fa = SafetensorsFile::open(a), fb = SafetensorsFile::open(b);
  REQUIRE(fa.names().size() == fb.names().size());
  for (const std::string& name : fa.names()) {
    INFO("tensor ", name);
    REQUIRE(fb.contains(name));
    const std::vector<float> va = fa.read_f32(name).to_vector(), vb = fb.read_f32(name).to_vector();
    REQUIRE(va.size() == vb.size());
    size_t diff = 0;
    for (size_t i = 0; i < va.size(); ++i) diff += std::memcmp(&va[i], &vb[i], sizeof(float)) != 0;
    CHECK(diff == 0);
  }
}

// Training tests run on one thread: CTest runs tests side by side (-j), and OpenMP threads
// that spin-wait for a busy core make an oversubscribed run many times slower.
struct OneThread {
  int saved = num_threads();
  OneThread() { set_num_threads(1); }
  ~OneThread() { set_num_threads(saved); }
};

const IdxDataset& train_set() {
  static const IdxDataset d = read_fashion_mnist(kData, "train");
  return d;
}
const IdxDataset& test_set() {
  static const IdxDataset d = read_fashion_mnist(kData, "test");
  return d;
}

}  // namespace

// --- the IDX reader ------------------------------------------------------------------------

TEST_CASE("fashion: IDX reader on the real files agrees with a second reading by zlib") {
  for (const std::string split : {"train", "test"}) {
    INFO("split ", split);
    const IdxDataset& d = split == "train" ? train_set() : test_set();
    const int64_t n = split == "train" ? 60000 : 10000;
    REQUIRE(d.images.shape() == Shape{n, 28, 28, 1});
    REQUIRE(d.labels.shape() == Shape{n});
    const std::string stem = kData + "/" + (split == "train" ? "train" : "t10k");
    const std::string img = gunzip_file(stem + "-images-idx3-ubyte.gz");
    const std::string lab = gunzip_file(stem + "-labels-idx1-ubyte.gz");
    REQUIRE(img.size() == 16 + static_cast<size_t>(n) * 784);
    REQUIRE(lab.size() == 8 + static_cast<size_t>(n));
    // Every label, and the pixels of a spread of images, byte for byte.
    std::vector<int> per_class(10, 0);
    for (int64_t i = 0; i < n; ++i) {
      const int want = static_cast<unsigned char>(lab[8 + i]);
      REQUIRE(d.labels.data()[i] == static_cast<float>(want));
      per_class[want]++;
    }
    for (int c = 0; c < 10; ++c) CHECK(per_class[c] == n / 10);  // Fashion-MNIST is balanced
    for (int64_t i : {int64_t{0}, int64_t{1}, int64_t{4321}, n - 1})
      for (int j = 0; j < 784; ++j)
        REQUIRE(d.images.data()[i * 784 + j] == static_cast<unsigned char>(img[16 + i * 784 + j]) / 255.f);
    float lo = 1.f, hi = 0.f;
    for (int64_t i = 0; i < d.images.numel(); ++i) {
      lo = std::min(lo, d.images.data()[i]);
      hi = std::max(hi, d.images.data()[i]);
    }
    CHECK(lo == 0.f);
    CHECK(hi == 1.f);
  }
  // Known first labels of the published files: train starts 9 (ankle boot), 0, 0, 3, 0;
  // t10k starts 9, 2, 1, 1, 6.
  const float train_first[] = {9, 0, 0, 3, 0}, test_first[] = {9, 2, 1, 1, 6};
  for (int i = 0; i < 5; ++i) {
    CHECK(train_set().labels.data()[i] == train_first[i]);
    CHECK(test_set().labels.data()[i] == test_first[i]);
  }
}

TEST_CASE("fashion: IDX reader reads plain and gzip files alike") {
  TempDir t;
  const std::string raw = idx_images(3, 4, 5);
  write_bytes(t.file("plain"), raw);
  write_bytes(t.file("zipped.gz"), gzip(raw));
  const Tensor a = read_idx_images(t.file("plain")), b = read_idx_images(t.file("zipped.gz"));
  REQUIRE(a.shape() == Shape{3, 4, 5, 1});
  REQUIRE(a.to_vector() == b.to_vector());
  for (int i = 0; i < 60; ++i) CHECK(a.data()[i] == static_cast<float>((i * 37) & 0xff) / 255.f);
  write_bytes(t.file("labels"), idx_labels(3));
  const IdxDataset d = read_idx_pair(t.file("zipped.gz"), t.file("labels"));
  CHECK(d.labels.to_vector() == std::vector<float>{0, 1, 2});
}

TEST_CASE("fashion: IDX reader refuses broken files, naming them") {
  TempDir t;
  struct Case {
    const char* name;
    std::string bytes;
    bool labels;
    const char* expect;
  };
  const std::string good = idx_images(4, 28, 28);
  const std::string zipped = gzip(good);
  std::string corrupt = zipped;
  for (size_t i = 20; i < 60; ++i) corrupt[i] = static_cast<char>(corrupt[i] ^ 0x5a);
  const std::vector<Case> cases = {
      {"bad_magic", idx_images(4, 28, 28, 0x804), false, "bad magic number 0x00000804, expected 0x00000803"},
      {"labels_as_images", idx_labels(4), false, "bad magic number 0x00000801"},
      {"images_as_labels", good, true, "bad magic number 0x00000803, expected 0x00000801"},
      {"not_idx_not_gzip", "hello, this is plain text and not an IDX file", false, "not gzip-compressed"},
      {"empty", "", false, "empty file"},
      {"short_header", be32(0x803) + be32(4), false, "ends inside the IDX header"},
      {"short_data", good.substr(0, good.size() - 100), false, "short data"},
      {"short_labels", idx_labels(10).substr(0, 15), true, "short data"},
      {"trailing", good + "xyz", false, "unexpected bytes after"},
      {"label_range", idx_labels(20, 7), true, "label 10 of item 7 is outside 0..9"},
      {"truncated.gz", zipped.substr(0, zipped.size() / 2), false, "truncated gzip"},
      {"truncated_tail.gz", zipped.substr(0, zipped.size() - 4), false, "gzip"},
      {"corrupt.gz", corrupt, false, "corrupt gzip"},
      {"huge", be32(0x803) + be32(0xffffffff) + be32(0xffffffff) + be32(28), false, "more than"},
  };
  for (const Case& c : cases) {
    INFO("case ", c.name);
    const std::string path = t.file(c.name);
    write_bytes(path, c.bytes);
    const std::string msg =
        c.labels ? error_of([&] { read_idx_labels(path); }) : error_of([&] { read_idx_images(path); });
    INFO("message: ", msg);
    CHECK(contains(msg, path));
    CHECK(contains(msg, c.expect));
  }
  const std::string missing = t.file("missing.gz");
  CHECK(contains(error_of([&] { read_idx_images(missing); }), missing + ": cannot open"));
  CHECK(contains(error_of([&] { read_idx_images(t.path); }), "not a regular file"));

  // A pair whose counts disagree names both files.
  write_bytes(t.file("imgs"), idx_images(5, 28, 28));
  write_bytes(t.file("labs"), idx_labels(4));
  const std::string msg = error_of([&] { read_idx_pair(t.file("imgs"), t.file("labs")); });
  CHECK(contains(msg, t.file("imgs") + " has 5 images but " + t.file("labs") + " has 4 labels"));

  // The Fashion-MNIST loader wants 28x28 images.
  std::filesystem::create_directory(t.file("fm"));
  write_bytes(t.file("fm/t10k-images-idx3-ubyte.gz"), gzip(idx_images(4, 27, 28)));
  write_bytes(t.file("fm/t10k-labels-idx1-ubyte.gz"), gzip(idx_labels(4)));
  CHECK(contains(error_of([&] { read_fashion_mnist(t.file("fm"), "test"); }), "27x28"));

  // A missing folder says so, and for the default one which package fills it.
  CHECK(contains(error_of([&] { read_fashion_mnist(t.file("no-such"), "test"); }),
                 t.file("no-such") + ": no such folder (give --data"));
  if (!std::filesystem::exists(kFashionMnistDir))
    CHECK(contains(error_of([&] { read_fashion_mnist(kFashionMnistDir, "test"); }),
                   "package dataset-fashion-mnist installs"));
}

// --- the model ---------------------------------------------------------------------------------

TEST_CASE("fashion: the model's shapes, names, size and batch-norm folding") {
  FashionInception m;
  Rng rng(3);
  m.reset_parameters(rng);
  CHECK(m.name() == "fashion_inception");
  CHECK(m.classes() == 10);
  CHECK(m.class_names() == fashion_mnist_classes());
  CHECK(m.input_channels() == 1);
  const int64_t params = m.parameter_count();
  MESSAGE("fashion_inception parameters: ", params);
  CHECK(params > 50'000);
  CHECK(params < 1'000'000);
  std::vector<std::string> names;
  for (auto& [n, p] : m.named_parameters()) names.push_back(n);
  for (const char* want : {"stem.conv.weight", "stem.bn.weight", "block1.branch1x1.conv.weight",
                           "block1.branch3x3_2.conv.weight", "block1.branch3x3dbl_3.bn.bias",
                           "block1.branch_pool.conv.weight", "reduce.branch3x3.conv.weight",
                           "block2.branch_pool.conv.weight", "fc.weight", "fc.bias"})
    CHECK(std::find(names.begin(), names.end(), want) != names.end());
  bool has_buffer = false;
  for (auto& [n, t] : m.named_buffers()) has_buffer = has_buffer || n == "block2.branch3x3dbl_2.bn.running_var";
  CHECK(has_buffer);

  // Training mode: forward and backward shapes; the input gradient is in pixel units.
  Rng data_rng(5);
  Var x(rand_uniform(Shape{3, 28, 28, 1}, data_rng), true);
  m.train(true);
  Var logits = m.forward(x);
  REQUIRE(logits.shape() == Shape{3, 10});
  mean(cross_entropy(logits, Tensor::from_vector(Shape{3}, {1, 7, 9}))).backward();
  REQUIRE(x.grad().defined());
  CHECK(x.grad().shape() == x.shape());
  for (auto& [n, p] : m.named_parameters()) {
    INFO(n);
    CHECK(p->grad().defined());
  }
  // Wrong input sizes are refused with the expected shape in the message.
  CHECK(contains(error_of([&] { m.forward(Var(Tensor::zeros(Shape{1, 28, 28, 3}))); }), "(N, 28, 28, 1)"));

  // Evaluation mode with running statistics equals the folded model.
  Rng stats(11);
  for (auto& [n, t] : m.named_buffers()) {
    if (contains(n, "running_mean")) t->copy_from(randn(t->shape(), stats, 0.3f));
    if (contains(n, "running_var")) t->copy_from(rand_uniform(t->shape(), stats, 0.5f, 2.f));
  }
  m.train(false);
  NoGradScope no_grad;
  const Tensor xs = rand_uniform(Shape{4, 28, 28, 1}, data_rng);
  const std::vector<float> unfolded = m.forward(Var(xs)).value().to_vector();
  FashionInception f;
  f.load_state_dict(m.state_dict());
  f.fold_batch_norms();
  CHECK(f.folded());
  const std::vector<float> folded = f.forward(Var(xs)).value().to_vector();
  for (size_t i = 0; i < folded.size(); ++i) CHECK(folded[i] == doctest::Approx(unfolded[i]).epsilon(1e-4));
  f.train(true);
  CHECK(contains(error_of([&] { f.forward(Var(xs)); }), "folded"));
  // random_model knows it too.
  CHECK(random_model("fashion_inception", 1)->name() == "fashion_inception");
}

// --- optimisers ------------------------------------------------------------------------------

TEST_CASE("fashion: SGD with momentum and weight decay follows the update formulas") {
  const std::vector<double> p0 = {1.0, -2.0, 0.5}, g1 = {0.1, 0.2, -0.3}, g2 = {-0.4, 0.05, 0.25};
  const double lr = 0.1, mu = 0.9, wd = 0.01;
  Var w(Tensor::from_vector(Shape{3}, {1.f, -2.f, 0.5f}), true);
  Var b(Tensor::from_vector(Shape{3}, {1.f, -2.f, 0.5f}), true);  // same values, no weight decay
  OptimizerOptions o;
  o.lr = static_cast<float>(lr);
  o.momentum = static_cast<float>(mu);
  Sgd opt({{"w", &w, static_cast<float>(wd)}, {"b", &b, 0.f}}, o);
  auto set_grads = [&](const std::vector<double>& g) {
    std::vector<float> gf(g.begin(), g.end());
    w.zero_grad(), b.zero_grad();
    accumulate_grad(*w.state(), Tensor::from_vector(Shape{3}, gf), false);
    accumulate_grad(*b.state(), Tensor::from_vector(Shape{3}, gf), false);
  };
  set_grads(g1);
  opt.step();
  set_grads(g2);
  opt.step();
  for (int i = 0; i < 3; ++i) {
    // By hand: step 1: d1 = g1 + wd p0, buf1 = d1, p1 = p0 - lr buf1;
    //          step 2: d2 = g2 + wd p1, buf2 = mu buf1 + d2, p2 = p1 - lr buf2.
    const double d1 = g1[i] + wd * p0[i], p1 = p0[i] - lr * d1;
    const double d2 = g2[i] + wd * p1, buf2 = mu * d1 + d2, p2 = p1 - lr * buf2;
    CHECK(w.value().data()[i] == doctest::Approx(p2).epsilon(1e-6));
    const double bp1 = p0[i] - lr * g1[i], bp2 = bp1 - lr * (mu * g1[i] + g2[i]);
    CHECK(b.value().data()[i] == doctest::Approx(bp2).epsilon(1e-6));
  }
  // The state round-trips: a second optimiser loaded from it continues identically.
  Var w2(w.value().clone(), true), b2(b.value().clone(), true);
  Sgd opt2({{"w", &w2, static_cast<float>(wd)}, {"b", &b2, 0.f}}, o);
  std::map<std::string, Tensor> st;
  for (auto& [n, t] : opt.state()) st[n] = t;
  CHECK(st.count("w.momentum_buffer") == 1);
  opt2.load_state(st, opt.steps());
  set_grads(g1);
  accumulate_grad(*w2.state(), Tensor::from_vector(Shape{3}, {0.1f, 0.2f, -0.3f}), false);
  accumulate_grad(*b2.state(), Tensor::from_vector(Shape{3}, {0.1f, 0.2f, -0.3f}), false);
  opt.step();
  opt2.step();
  CHECK(w.value().to_vector() == w2.value().to_vector());
  CHECK(b.value().to_vector() == b2.value().to_vector());
  st["x.momentum_buffer"] = Tensor::zeros(Shape{3});
  CHECK(contains(error_of([&] { opt2.load_state(st, 1); }), "x.momentum_buffer"));
}

TEST_CASE("fashion: Adam and AdamW follow the update formulas") {
  const std::vector<double> p0 = {0.3, -1.5, 2.0}, g1 = {0.2, -0.1, 0.05}, g2 = {-0.3, 0.4, 0.01};
  const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
  for (const bool decoupled : {false, true}) {
    INFO("decoupled weight decay: ", decoupled);
    Var w(Tensor::from_vector(Shape{3}, {0.3f, -1.5f, 2.f}), true);
    OptimizerOptions o;
    o.lr = static_cast<float>(lr);
    Adam opt({{"w", &w, static_cast<float>(wd)}}, o, decoupled);
    CHECK(opt.name() == (decoupled ? "adamw" : "adam"));
    for (const auto* g : {&g1, &g2}) {
      w.zero_grad();
      std::vector<float> gf(g->begin(), g->end());
      accumulate_grad(*w.state(), Tensor::from_vector(Shape{3}, gf), false);
      opt.step();
    }
    for (int i = 0; i < 3; ++i) {
      double p = p0[i], m = 0, v = 0;
      const double gs[2] = {g1[i], g2[i]};
      for (int t = 1; t <= 2; ++t) {
        double d = gs[t - 1];
        if (decoupled)
          p *= 1 - lr * wd;
        else
          d += wd * p;
        m = b1 * m + (1 - b1) * d;
        v = b2 * v + (1 - b2) * d * d;
        const double mhat = m / (1 - std::pow(b1, t)), vhat = v / (1 - std::pow(b2, t));
        p -= lr * mhat / (std::sqrt(vhat) + eps);
      }
      CHECK(w.value().data()[i] == doctest::Approx(p).epsilon(1e-6));
    }
  }
  Var w(Tensor::zeros(Shape{2}), true);
  CHECK(contains(error_of([&] { make_optimizer("rmsprop", {{"w", &w, 0.f}}, OptimizerOptions{}); }), "rmsprop"));
}

TEST_CASE("fashion: learning-rate schedules") {
  CHECK(scheduled_lr(LrSchedule::Constant, 0.1f, 50, 100) == doctest::Approx(0.1));
  CHECK(scheduled_lr(LrSchedule::Cosine, 0.1f, 0, 100) == doctest::Approx(0.1));
  CHECK(scheduled_lr(LrSchedule::Cosine, 0.1f, 50, 100) == doctest::Approx(0.05));
  CHECK(scheduled_lr(LrSchedule::Cosine, 0.1f, 99, 100) == doctest::Approx(0.05 * (1 + std::cos(M_PI * 0.99))));
  // Warm-up: linear from lr / warmup, then cosine over the remaining steps.
  CHECK(scheduled_lr(LrSchedule::Cosine, 0.1f, 0, 110, 10) == doctest::Approx(0.01));
  CHECK(scheduled_lr(LrSchedule::Cosine, 0.1f, 9, 110, 10) == doctest::Approx(0.1));
  CHECK(scheduled_lr(LrSchedule::Cosine, 0.1f, 60, 110, 10) == doctest::Approx(0.05));
  CHECK(scheduled_lr(LrSchedule::Step, 0.1f, 49, 100) == doctest::Approx(0.1));
  CHECK(scheduled_lr(LrSchedule::Step, 0.1f, 50, 100) == doctest::Approx(0.01));
  CHECK(scheduled_lr(LrSchedule::Step, 0.1f, 75, 100) == doctest::Approx(0.001));
  CHECK(parse_lr_schedule("cosine") == LrSchedule::Cosine);
  CHECK(contains(error_of([] { parse_lr_schedule("linear"); }), "linear"));
}

// --- training ----------------------------------------------------------------------------------

TEST_CASE("fashion: training on a slice of the real data learns") {
  OneThread one_thread;
  TrainSettings s;
  s.epochs = 2;
  s.batch = 32;
  s.lr = 0.05f;
  s.warmup = 20;
  s.augment = false;
  s.limit = 3200;  // 100 steps per epoch, 200 in all
  s.seed = 7;
  TrainRun run;
  run.test_limit = 1000;
  EvalResult last;
  TrainCallbacks cb;
  cb.on_epoch = [&](const EpochReport& r) {
    if (r.evaluated) last = r.test;
  };
  const TrainResult r = train_fashion(s, run, train_set(), test_set(), cb);
  REQUIRE(r.finished);
  REQUIRE(r.losses.size() == 200);
  double first = 0, final = 0;
  for (int i = 0; i < 10; ++i) first += r.losses[i] / 10;
  for (int i = 180; i < 200; ++i) final += r.losses[i] / 20;
  MESSAGE("loss: first 10 steps ", first, ", last 20 steps ", final, "; ", accuracy_line(last));
  CHECK(first > 1.8);  // chance is ln 10 = 2.30
  CHECK(final < 0.8);
  CHECK(final < 0.4 * first);
  REQUIRE(last.total == 1000);
  CHECK(last.accuracy() > 0.6);
  // The confusion matrix adds up to the test items, its diagonal to the correct ones.
  int64_t sum = 0, diag = 0;
  for (int i = 0; i < 10; ++i)
    for (int j = 0; j < 10; ++j) sum += last.confusion[i * 10 + j], diag += i == j ? last.confusion[i * 10 + j] : 0;
  CHECK(sum == 1000);
  CHECK(diag == last.correct);
}

TEST_CASE("fashion: a resumed run equals an uninterrupted one, bit for bit") {
  OneThread one_thread;
  for (const std::string optimizer : {"sgd", "adam"}) {
    INFO("optimizer ", optimizer);
    TempDir t;
    TrainSettings s;
    s.epochs = 2;
    s.batch = 16;
    s.limit = 256;  // 16 steps per epoch (small: this test is 40% of the sanitizer run's time)
    s.optimizer = optimizer;
    s.lr = optimizer == "sgd" ? 0.05f : 0.002f;
    s.warmup = 4;
    s.augment = true;
    s.seed = 3;
    TrainRun straight;
    straight.out = t.file("straight.safetensors");
    straight.max_steps = 20;
    straight.test_limit = 64;
    train_fashion(s, straight, train_set(), test_set());
    TrainRun first = straight;
    first.out = t.file("resumed.safetensors");
    first.max_steps = 10;  // stops inside the first epoch
    const TrainResult a = train_fashion(s, first, train_set(), test_set());
    CHECK(a.step == 10);
    CHECK_FALSE(a.finished);
    TrainRun second = first;
    second.resume = true;
    second.max_steps = 20;  // crosses the epoch boundary at 16
    TrainSettings ignored = s;
    ignored.lr = 1.f;  // resume takes the checkpoint's settings
    const TrainResult b = train_fashion(ignored, second, train_set(), test_set());
    CHECK(b.step == 20);
    CHECK(b.settings.lr == s.lr);
    require_same_tensors(straight.out, second.out);
    const SafetensorsFile f = SafetensorsFile::open(second.out);
    CHECK(f.metadata().at("step") == "20");
    CHECK(f.metadata().at("epoch") == "1");
    CHECK(f.contains(optimizer == "sgd" ? "optim.fc.weight.momentum_buffer" : "optim.fc.weight.exp_avg_sq"));

    // load_model takes the checkpoint (ignoring the optimiser state), folded: same logits as
    // the unfolded model in evaluation mode.
    std::unique_ptr<Model> loaded = load_model(second.out);
    NoGradScope no_grad;
    const Tensor x = test_set().images.slice_first(0, 8);
    const std::vector<float> got = loaded->forward(Var(x)).value().to_vector();
    b.model->train(false);
    const std::vector<float> want = b.model->forward(Var(x)).value().to_vector();
    for (size_t i = 0; i < want.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-4));
  }
}

TEST_CASE("fashion: trick train --resume refuses options that contradict the checkpoint") {
  TempDir t;
  const std::string out = t.file("ck.safetensors");
  const std::string base = std::string(TRICK_BINARY) + " train --out " + out +
                           " --limit 64 --batch 32 --epochs 1 --test-limit 10 --threads 1 --seed 9";
  int status = 0;
  run_capture(base + " --steps 1 2>&1", &status);
  REQUIRE(status == 0);
  const std::string saved = read_bytes(out);
  const std::string msg = run_capture(std::string(TRICK_BINARY) + " train --out " + out + " --resume --lr 0.5 2>&1",
                                      &status);
  CHECK(status == 1);
  CHECK(contains(msg, "--lr 0.5 differs from the checkpoint's 0.1"));
  CHECK(read_bytes(out) == saved);  // the refused run left the checkpoint alone
  // A file that is not a checkpoint: refused, and left as it was.
  const std::string junk = t.file("junk.safetensors");
  {
    std::ofstream f(junk, std::ios::binary);
    f << "not a checkpoint at all";
  }
  const std::string bad = run_capture(std::string(TRICK_BINARY) + " train --out " + junk + " --resume 2>&1", &status);
  CHECK(status == 1);
  CHECK(contains(bad, "error: "));
  CHECK(contains(bad, junk));
  CHECK(read_bytes(junk) == "not a checkpoint at all");
  const std::string ok = run_capture(std::string(TRICK_BINARY) + " train --out " + out +
                                         " --resume --seed 9 --threads 1 --test-limit 10 --export " + t.file("w.safetensors") + " 2>&1",
                                     &status);
  INFO(ok);
  CHECK(status == 0);
  CHECK(contains(ok, "resumed from"));
  CHECK(contains(ok, "finished at step 2 of 2"));
  const SafetensorsFile w = SafetensorsFile::open(t.file("w.safetensors"));
  for (const std::string& n : w.names()) CHECK(n.rfind("optim.", 0) == std::string::npos);
  CHECK(w.metadata().at("model") == "fashion_inception");
}

// --- the shipped model -------------------------------------------------------------------------

TEST_CASE("fashion: trick eval on the embedded model prints the recorded accuracy") {
  std::ifstream rec(std::string(TRICK_SOURCE_DIR) + "/data/models/fashion_inception.json");
  REQUIRE(rec.good());
  const nlohmann::json record = nlohmann::json::parse(rec);
  const std::string want_pct = record.at("eval").at("accuracy_percent").get<std::string>();
  const int64_t want_correct = record.at("eval").at("correct").get<int64_t>();
  int status = 0;
  const std::string out = run_capture(std::string(TRICK_BINARY) + " eval --json 2>&1", &status);
  INFO(out);
  REQUIRE(status == 0);
  const nlohmann::json got = nlohmann::json::parse(out);
  CHECK(got.at("total").get<int64_t>() == 10000);
  CHECK(got.at("correct").get<int64_t>() == want_correct);
  CHECK(got.at("accuracy_percent").get<std::string>() == want_pct);
  CHECK(got.at("correct").get<int64_t>() >= 9100);  // the shipped model's promise: >= 91%
  // The text form prints the same number.
  const std::string text = run_capture(std::string(TRICK_BINARY) + " eval 2>&1", &status);
  CHECK(status == 0);
  CHECK(contains(text, "test accuracy " + want_pct + "% (" + std::to_string(want_correct) + "/10000)"));
  // The embedded bytes are the committed file's.
  CHECK(default_weights_bytes() == read_bytes(std::string(TRICK_SOURCE_DIR) +
                                              "/data/models/fashion_inception.safetensors"));

  // The count made here, not by trick eval: the embedded model's argmax against the labels
  // of the first 1000 test images (the IDX reader is checked against zlib above), and the
  // confusion matrix's rows against the labels.
  std::unique_ptr<Model> m = load_default_model();
  m->set_requires_grad(false);
  m->train(false);
  const int64_t n = 1000;
  int64_t correct = 0;
  std::vector<int64_t> per_class(10, 0);
  {
    NoGradScope no_grad;
    const std::vector<float> logits = m->forward(Var(test_set().images.slice_first(0, n))).value().to_vector();
    const float* labels = test_set().labels.data();
    for (int64_t i = 0; i < n; ++i) {
      const float* row = logits.data() + i * 10;
      const int64_t top = std::max_element(row, row + 10) - row;
      correct += top == static_cast<int64_t>(labels[i]);
      ++per_class[static_cast<size_t>(labels[i])];
    }
  }
  const nlohmann::json part =
      nlohmann::json::parse(run_capture(std::string(TRICK_BINARY) + " eval --json --limit 1000 2>/dev/null", &status));
  CHECK(status == 0);
  CHECK(part.at("total").get<int64_t>() == n);
  CHECK(part.at("correct").get<int64_t>() == correct);
  const auto confusion = part.at("confusion").get<std::vector<std::vector<int64_t>>>();
  REQUIRE(confusion.size() == 10);
  for (int c = 0; c < 10; ++c) {
    int64_t row = 0;
    for (int64_t v : confusion[c]) row += v;
    CHECK(row == per_class[c]);
  }
  CHECK(correct >= 900);  // the same promise on this part of the test set
}

TEST_CASE("fashion: trick eval --samples writes each class's most confident correctly classified test image") {
  TempDir dir;
  const std::string out_dir = dir.file("samples");
  int status = 0;
  const std::string out = run_capture(std::string(TRICK_BINARY) + " eval --limit 1000 --samples " + out_dir + " 2>&1",
                                      &status);
  INFO(out);
  REQUIRE(status == 0);
  // The choice made here, from the model's probabilities on the same 1000 test images.
  std::unique_ptr<Model> m = load_default_model();
  m->set_requires_grad(false);
  m->train(false);
  const int64_t n = 1000;
  std::vector<float> p;
  {
    NoGradScope no_grad;
    p = softmax(m->forward(Var(test_set().images.slice_first(0, n)))).value().to_vector();
  }
  const float* labels = test_set().labels.data();
  for (int c = 0; c < 10; ++c) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; ++i) {
      const float* row = p.data() + i * 10;
      if (static_cast<int>(labels[i]) != c || std::max_element(row, row + 10) - row != c) continue;
      if (best < 0 || row[c] > p[best * 10 + c]) best = i;
    }
    REQUIRE(best >= 0);
    const std::string path = cat(out_dir, "/", c, "_", class_slug(fashion_mnist_classes()[c]), ".png");
    CAPTURE(path);
    CHECK(contains(out, "wrote " + path + " (test image " + std::to_string(best) + ", p = "));
    // The file is that test image, exactly (its pixels are k/255 already).
    CHECK(load_image(path, 1).to_vector() == test_set().images.slice_first(best, best + 1).to_vector());
  }
  // Nothing else in the folder.
  CHECK(std::distance(std::filesystem::directory_iterator(out_dir), std::filesystem::directory_iterator{}) == 10);
}

TEST_CASE("fashion: the sample images are classified as their names say") {
  const std::string dir = std::string(TRICK_SOURCE_DIR) + "/data/samples/fashion";
  std::unique_ptr<Model> m = load_default_model();
  m->set_requires_grad(false);
  const std::regex pattern("([0-9])_([a-z_-]+)\\.png");
  std::vector<bool> seen(10, false);
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string file = e.path().filename().string();
    std::smatch match;
    INFO(file);
    REQUIRE(std::regex_match(file, match, pattern));
    const int c = std::stoi(match[1]);
    CHECK(match[2] == class_slug(fashion_mnist_classes()[c]));
    seen[c] = true;
    const Tensor image = load_image(e.path().string(), 1);
    CHECK(image.shape() == Shape{28, 28, 1});
    NoGradScope no_grad;
    const Tensor input = model_input(*m, image, false);
    // The model's transform (resize shorter side to 28, centre crop 28) leaves a 28x28 image as it is.
    CHECK(input.to_vector() == image.to_vector());
    const std::vector<float> p = softmax(m->forward(Var(input))).value().to_vector();
    const int top = static_cast<int>(std::max_element(p.begin(), p.end()) - p.begin());
    CHECK(top == c);
    CHECK(p[c] > 0.9f);
  }
  for (int c = 0; c < 10; ++c) CHECK(seen[c]);
  CHECK(class_slug("T-shirt/top") == "t-shirt_top");
  CHECK(class_slug("Ankle boot") == "ankle_boot");
}

}  // namespace test_fashion
