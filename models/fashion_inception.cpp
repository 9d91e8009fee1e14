#include "models/fashion_inception.h"

#include <cmath>

#include "autograd/profile.h"
#include "models/labels.h"

namespace trick {

namespace {

constexpr float kBnEps = 1e-3f;

// Channel widths, sized by measuring training speed on a shared 2-core CPU: 138k
// parameters, about 10 M multiply-adds per image forward, 200-450 training images/s on one
// core (see data/models/README.md).
constexpr int64_t kStem = 24;
struct InceptionWidths {
  int64_t b1, b3_reduce, b3, d_reduce, d, pool;
  int64_t out() const { return b1 + b3 + d + pool; }
};
constexpr InceptionWidths kBlock1{16, 16, 24, 16, 24, 16};  // 80 channels at 14x14
struct ReduceWidths {
  int64_t b3, d_reduce, d;
};
constexpr ReduceWidths kReduce{48, 24, 32};                  // + the pooled input: 160 at 7x7
constexpr InceptionWidths kBlock2{32, 32, 48, 32, 48, 32};   // 160 at 7x7

struct Unit : ConvBnRelu {
  Unit(int64_t in, int64_t out, int k, int stride, int pad, const std::string& name)
      : ConvBnRelu(Conv2dOptions{in, out, k, k, stride, pad, pad, false, false}, kBnEps, name) {}
};

// A module owning ConvBnRelu children registered under their names; every unit is also
// listed in `all` (the model's list, for initialising and folding).
struct Group : Module {
  std::vector<std::unique_ptr<Unit>> owned;
  std::vector<Unit*>* all = nullptr;
  std::string prefix;
  Unit* add(const std::string& name, int64_t in, int64_t out, int k, int stride = 1, int pad = 0) {
    owned.push_back(std::make_unique<Unit>(in, out, k, stride, pad, prefix.empty() ? name : prefix + "." + name));
    all->push_back(owned.back().get());
    register_module(name, owned.back().get());
    return owned.back().get();
  }
};

Tensor block_output(const Var& x, int64_t h, int64_t w, int64_t c) {
  return Tensor::empty(Shape{x.shape()[0], h, w, c}, x.value().device());
}

const Pool2dParams kAvg3 = Pool2dParams::square(3, 1, 1, false);  // padding not counted
const Pool2dParams kMax3s2 = Pool2dParams::square(3, 2, 1);

// 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 | avg pool 3x3 -> 1x1, concatenated; same grid.
struct InceptionBlock : Group {
  InceptionWidths w{};
  Unit *b1, *b3_1, *b3_2, *d1, *d2, *d3, *bp;
  void build(int64_t in, const InceptionWidths& widths) {
    w = widths;
    b1 = add("branch1x1", in, w.b1, 1);
    b3_1 = add("branch3x3_1", in, w.b3_reduce, 1);
    b3_2 = add("branch3x3_2", w.b3_reduce, w.b3, 3, 1, 1);
    d1 = add("branch3x3dbl_1", in, w.d_reduce, 1);
    d2 = add("branch3x3dbl_2", w.d_reduce, w.d, 3, 1, 1);
    d3 = add("branch3x3dbl_3", w.d, w.d, 3, 1, 1);
    bp = add("branch_pool", in, w.pool, 1);
  }
  Var forward(const Var& x) {
    LayerScope scope(prefix, LayerScope::Prefix);  // names the pool and the concat
    Tensor out = block_output(x, x.shape()[1], x.shape()[2], w.out());
    int64_t c = 0;
    auto slot = [&](int64_t n) {
      c += n;
      return out.slice_last(c - n, c);
    };
    Var a = b1->forward(x, slot(w.b1));
    Var b = b3_2->forward(b3_1->forward(x), slot(w.b3));
    Var d = d3->forward(d2->forward(d1->forward(x)), slot(w.d));
    Var p = bp->forward(avg_pool2d(x, kAvg3), slot(w.pool));
    return concat_into({a, b, d, p}, out);
  }
};

// Grid reduction (halves H and W): 3x3 stride 2 | 1x1 -> 3x3 -> 3x3 stride 2 | max pool
// stride 2 of the input, concatenated.
struct ReduceBlock : Group {
  ReduceWidths w{};
  int64_t in = 0;
  Unit *b3, *d1, *d2, *d3;
  void build(int64_t in_, const ReduceWidths& widths) {
    in = in_;
    w = widths;
    b3 = add("branch3x3", in, w.b3, 3, 2, 1);
    d1 = add("branch3x3dbl_1", in, w.d_reduce, 1);
    d2 = add("branch3x3dbl_2", w.d_reduce, w.d, 3, 1, 1);
    d3 = add("branch3x3dbl_3", w.d, w.d, 3, 2, 1);
  }
  int64_t out_channels() const { return w.b3 + w.d + in; }
  Var forward(const Var& x) {
    LayerScope scope(prefix, LayerScope::Prefix);  // names the pool and the concat
    const int64_t h = (x.shape()[1] - 1) / 2 + 1, wd = (x.shape()[2] - 1) / 2 + 1;  // 3x3, stride 2, pad 1
    Tensor out = block_output(x, h, wd, out_channels());
    Var a = b3->forward(x, out.slice_last(0, w.b3));
    Var d = d3->forward(d2->forward(d1->forward(x)), out.slice_last(w.b3, w.b3 + w.d));
    Var p = max_pool2d(x, kMax3s2, out.slice_last(w.b3 + w.d, out_channels()));
    return concat_into({a, d, p}, out);
  }
};

}  // namespace

struct FashionInception::Parts {
  std::vector<Unit*> all;
  Group stem_group;
  Unit* stem = nullptr;
  InceptionBlock block1, block2;
  ReduceBlock reduce;
  std::unique_ptr<Linear> fc;
};

FashionInception::FashionInception() : p_(std::make_unique<Parts>()) {
  Parts& p = *p_;
  // The stem sits at the top level of the names ("stem.conv.weight").
  p.stem_group.all = &p.all;
  p.stem_group.prefix = "";
  p.stem = p.stem_group.add("stem", 1, kStem, 3, 1, 1);
  register_module("stem", p.stem);
  auto group = [&](Group& g, const std::string& name) {
    g.all = &p.all;
    g.prefix = name;
    register_module(name, &g);
  };
  group(p.block1, "block1"), p.block1.build(kStem, kBlock1);
  group(p.reduce, "reduce"), p.reduce.build(kBlock1.out(), kReduce);
  group(p.block2, "block2"), p.block2.build(p.reduce.out_channels(), kBlock2);
  p.fc = std::make_unique<Linear>(kBlock2.out(), 10);
  register_module("fc", p.fc.get());
}

FashionInception::~FashionInception() = default;

const std::vector<std::string>& FashionInception::class_names() const { return fashion_mnist_classes(); }

void FashionInception::reset_parameters(Rng& rng) {
  TRICK_CHECK(!folded(), "fashion_inception: reset_parameters after the batch norms were folded");
  for (Unit* u : p_->all) {
    u->conv.reset_parameters(rng);
    u->bn.weight.mutable_value().fill(1.f);
    u->bn.bias.mutable_value().fill(0.f);
    u->bn.running_mean.fill(0.f);
    u->bn.running_var.fill(1.f);
  }
  p_->fc->reset_parameters(rng);
}

void FashionInception::fold_batch_norms() {
  for (Unit* u : p_->all) u->fold();
}

bool FashionInception::folded() const { return !p_->all.empty() && p_->all.front()->folded(); }

Var FashionInception::forward(const Var& pixels) {
  Parts& p = *p_;
  const Shape s = pixels.shape();
  TRICK_CHECK(s.ndim == 4 && s[1] == 28 && s[2] == 28 && s[3] == 1, "fashion_inception: input must be ",
              "(N, 28, 28, 1) pixels in [0, 1], got ", s.str());
  TRICK_CHECK(!(is_training() && folded()), "fashion_inception: cannot train a model whose batch norms are folded");
  // The scopes name the layers of a profile (autograd/profile.h); they cost nothing otherwise.
  Var x;
  {
    LayerScope layer("normalize");
    x = affine(pixels, 1.f / kStd, -kMean / kStd);
  }
  x = p.stem->forward(x);
  {
    LayerScope layer("maxpool");
    x = max_pool2d(x, kMax3s2);
  }
  x = p.block1.forward(x);
  x = p.reduce.forward(x);
  x = p.block2.forward(x);
  {
    LayerScope layer("avgpool");
    x = global_avg_pool(x);
  }
  LayerScope layer("fc");
  return p.fc->forward(x);
}

}  // namespace trick
