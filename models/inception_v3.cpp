#include "models/inception_v3.h"

#include <map>
#include <string>
#include <vector>

#include "autograd/profile.h"
#include "models/labels.h"

namespace trick {

namespace {

constexpr float kBnEps = 1e-3f;

// torchvision's BasicConv2d: conv (no bias) + BN + ReLU, registered as "<name>.conv" / ".bn".
struct Basic : ConvBnRelu {
  Basic(int64_t in, int64_t out, int kh, int kw, int stride, int ph, int pw, const std::string& name)
      : ConvBnRelu(Conv2dOptions{in, out, kh, kw, stride, ph, pw, false, false}, kBnEps, name) {}
  int64_t out_channels() const { return conv.weight.shape()[0]; }
};

// A module that owns BasicConv2d children registered under their torchvision names; every
// conv is also listed in `all` (the model's list, for folding).
struct Block : Module {
  std::vector<std::unique_ptr<Basic>> owned;
  std::vector<Basic*>* all = nullptr;
  std::string prefix;  // "Mixed_5b", or "" for the stem
  Basic* add(const std::string& name, int64_t in, int64_t out, int kh, int kw, int stride = 1, int ph = 0,
             int pw = 0) {
    const std::string full = prefix.empty() ? name : prefix + "." + name;
    owned.push_back(std::make_unique<Basic>(in, out, kh, kw, stride, ph, pw, full));
    all->push_back(owned.back().get());
    register_module(name, owned.back().get());
    return owned.back().get();
  }
};

const Pool2dParams kAvg3 = Pool2dParams::square(3, 1, 1, true);
const Pool2dParams kMax3s2 = Pool2dParams::square(3, 2, 0);

Tensor block_output(const Var& x, int64_t h, int64_t w, int64_t c) {
  return Tensor::empty(Shape{x.shape()[0], h, w, c}, x.value().device());
}

struct InceptionA : Block {
  Basic *b1, *b5_1, *b5_2, *d1, *d2, *d3, *bp;
  void build(int64_t in, int64_t pool_features) {
    b1 = add("branch1x1", in, 64, 1, 1);
    b5_1 = add("branch5x5_1", in, 48, 1, 1);
    b5_2 = add("branch5x5_2", 48, 64, 5, 5, 1, 2, 2);
    d1 = add("branch3x3dbl_1", in, 64, 1, 1);
    d2 = add("branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1);
    d3 = add("branch3x3dbl_3", 96, 96, 3, 3, 1, 1, 1);
    bp = add("branch_pool", in, pool_features, 1, 1);
  }
  Var forward(const Var& x) {
    LayerScope scope(prefix, LayerScope::Prefix);  // names the pool and the concat
    const int64_t h = x.shape()[1], w = x.shape()[2], c = 64 + 64 + 96 + bp->out_channels();
    Tensor out = block_output(x, h, w, c);
    Var a = b1->forward(x, out.slice_last(0, 64));
    Var b = b5_2->forward(b5_1->forward(x), out.slice_last(64, 128));
    Var d = d3->forward(d2->forward(d1->forward(x)), out.slice_last(128, 224));
    Var p = bp->forward(avg_pool2d(x, kAvg3), out.slice_last(224, c));
    return concat_into({a, b, d, p}, out);
  }
};

struct InceptionB : Block {
  Basic *b3, *d1, *d2, *d3;
  int64_t in = 0;
  void build(int64_t in_) {
    in = in_;
    b3 = add("branch3x3", in, 384, 3, 3, 2);
    d1 = add("branch3x3dbl_1", in, 64, 1, 1);
    d2 = add("branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1);
    d3 = add("branch3x3dbl_3", 96, 96, 3, 3, 2);
  }
  Var forward(const Var& x) {
    LayerScope scope(prefix, LayerScope::Prefix);  // names the pool and the concat
    const int64_t h = (x.shape()[1] - 3) / 2 + 1, w = (x.shape()[2] - 3) / 2 + 1, c = 384 + 96 + in;
    Tensor out = block_output(x, h, w, c);
    Var a = b3->forward(x, out.slice_last(0, 384));
    Var d = d3->forward(d2->forward(d1->forward(x)), out.slice_last(384, 480));
    Var p = max_pool2d(x, kMax3s2, out.slice_last(480, c));
    return concat_into({a, d, p}, out);
  }
};

struct InceptionC : Block {
  Basic *b1, *s1, *s2, *s3, *d1, *d2, *d3, *d4, *d5, *bp;
  void build(int64_t in, int64_t c7) {
    b1 = add("branch1x1", in, 192, 1, 1);
    s1 = add("branch7x7_1", in, c7, 1, 1);
    s2 = add("branch7x7_2", c7, c7, 1, 7, 1, 0, 3);
    s3 = add("branch7x7_3", c7, 192, 7, 1, 1, 3, 0);
    d1 = add("branch7x7dbl_1", in, c7, 1, 1);
    d2 = add("branch7x7dbl_2", c7, c7, 7, 1, 1, 3, 0);
    d3 = add("branch7x7dbl_3", c7, c7, 1, 7, 1, 0, 3);
    d4 = add("branch7x7dbl_4", c7, c7, 7, 1, 1, 3, 0);
    d5 = add("branch7x7dbl_5", c7, 192, 1, 7, 1, 0, 3);
    bp = add("branch_pool", in, 192, 1, 1);
  }
  Var forward(const Var& x) {
    LayerScope scope(prefix, LayerScope::Prefix);  // names the pool and the concat
    Tensor out = block_output(x, x.shape()[1], x.shape()[2], 768);
    Var a = b1->forward(x, out.slice_last(0, 192));
    Var s = s3->forward(s2->forward(s1->forward(x)), out.slice_last(192, 384));
    Var d = d5->forward(d4->forward(d3->forward(d2->forward(d1->forward(x)))), out.slice_last(384, 576));
    Var p = bp->forward(avg_pool2d(x, kAvg3), out.slice_last(576, 768));
    return concat_into({a, s, d, p}, out);
  }
};

struct InceptionD : Block {
  Basic *t1, *t2, *s1, *s2, *s3, *s4;
  int64_t in = 0;
  void build(int64_t in_) {
    in = in_;
    t1 = add("branch3x3_1", in, 192, 1, 1);
    t2 = add("branch3x3_2", 192, 320, 3, 3, 2);
    s1 = add("branch7x7x3_1", in, 192, 1, 1);
    s2 = add("branch7x7x3_2", 192, 192, 1, 7, 1, 0, 3);
    s3 = add("branch7x7x3_3", 192, 192, 7, 1, 1, 3, 0);
    s4 = add("branch7x7x3_4", 192, 192, 3, 3, 2);
  }
  Var forward(const Var& x) {
    LayerScope scope(prefix, LayerScope::Prefix);  // names the pool and the concat
    const int64_t h = (x.shape()[1] - 3) / 2 + 1, w = (x.shape()[2] - 3) / 2 + 1, c = 320 + 192 + in;
    Tensor out = block_output(x, h, w, c);
    Var a = t2->forward(t1->forward(x), out.slice_last(0, 320));
    Var s = s4->forward(s3->forward(s2->forward(s1->forward(x))), out.slice_last(320, 512));
    Var p = max_pool2d(x, kMax3s2, out.slice_last(512, c));
    return concat_into({a, s, p}, out);
  }
};

struct InceptionE : Block {
  Basic *b1, *t1, *t2a, *t2b, *d1, *d2, *d3a, *d3b, *bp;
  void build(int64_t in) {
    b1 = add("branch1x1", in, 320, 1, 1);
    t1 = add("branch3x3_1", in, 384, 1, 1);
    t2a = add("branch3x3_2a", 384, 384, 1, 3, 1, 0, 1);
    t2b = add("branch3x3_2b", 384, 384, 3, 1, 1, 1, 0);
    d1 = add("branch3x3dbl_1", in, 448, 1, 1);
    d2 = add("branch3x3dbl_2", 448, 384, 3, 3, 1, 1, 1);
    d3a = add("branch3x3dbl_3a", 384, 384, 1, 3, 1, 0, 1);
    d3b = add("branch3x3dbl_3b", 384, 384, 3, 1, 1, 1, 0);
    bp = add("branch_pool", in, 192, 1, 1);
  }
  Var forward(const Var& x) {
    LayerScope scope(prefix, LayerScope::Prefix);  // names the pool and the concat
    Tensor out = block_output(x, x.shape()[1], x.shape()[2], 2048);
    Var a = b1->forward(x, out.slice_last(0, 320));
    Var t = t1->forward(x);
    Var ta = t2a->forward(t, out.slice_last(320, 704));
    Var tb = t2b->forward(t, out.slice_last(704, 1088));
    Var d = d2->forward(d1->forward(x));
    Var da = d3a->forward(d, out.slice_last(1088, 1472));
    Var db = d3b->forward(d, out.slice_last(1472, 1856));
    Var p = bp->forward(avg_pool2d(x, kAvg3), out.slice_last(1856, 2048));
    return concat_into({a, ta, tb, da, db, p}, out);
  }
};

}  // namespace

struct InceptionV3::Blocks {
  std::vector<Basic*> all;
  Block stem_block;  // owns the stem's convs (registered on the model itself)
  std::vector<Basic*> stem;
  InceptionA m5b, m5c, m5d;
  InceptionB m6a;
  InceptionC m6b, m6c, m6d, m6e;
  InceptionD m7a;
  InceptionE m7b, m7c;
  std::unique_ptr<Linear> fc;
};

InceptionV3::InceptionV3(int num_classes) : b_(std::make_unique<Blocks>()) {
  Blocks& b = *b_;
  // The stem's convs sit at the top level of torchvision's names ("Conv2d_1a_3x3.conv.weight").
  b.stem_block.all = &b.all;
  auto stem = [&](const std::string& name, int64_t in, int64_t out, int k, int stride, int pad) {
    b.stem.push_back(b.stem_block.add(name, in, out, k, k, stride, pad, pad));
    register_module(name, b.stem.back());
  };
  stem("Conv2d_1a_3x3", 3, 32, 3, 2, 0);
  stem("Conv2d_2a_3x3", 32, 32, 3, 1, 0);
  stem("Conv2d_2b_3x3", 32, 64, 3, 1, 1);
  stem("Conv2d_3b_1x1", 64, 80, 1, 1, 0);
  stem("Conv2d_4a_3x3", 80, 192, 3, 1, 0);
  auto block = [&](Block& m, const std::string& name) {
    m.all = &b.all;
    m.prefix = name;
    register_module(name, &m);
  };
  block(b.m5b, "Mixed_5b"), b.m5b.build(192, 32);
  block(b.m5c, "Mixed_5c"), b.m5c.build(256, 64);
  block(b.m5d, "Mixed_5d"), b.m5d.build(288, 64);
  block(b.m6a, "Mixed_6a"), b.m6a.build(288);
  block(b.m6b, "Mixed_6b"), b.m6b.build(768, 128);
  block(b.m6c, "Mixed_6c"), b.m6c.build(768, 160);
  block(b.m6d, "Mixed_6d"), b.m6d.build(768, 160);
  block(b.m6e, "Mixed_6e"), b.m6e.build(768, 192);
  block(b.m7a, "Mixed_7a"), b.m7a.build(768);
  block(b.m7b, "Mixed_7b"), b.m7b.build(1280);
  block(b.m7c, "Mixed_7c"), b.m7c.build(2048);
  b.fc = std::make_unique<Linear>(2048, num_classes);
  register_module("fc", b.fc.get());
}

InceptionV3::~InceptionV3() = default;

const std::vector<std::string>& InceptionV3::class_names() const { return imagenet_classes(); }

Var InceptionV3::forward(const Var& pixels) {
  Blocks& b = *b_;
  const Shape s = pixels.shape();
  TRICK_CHECK(s.ndim == 4 && s[3] == 3 && s[1] >= 75 && s[2] >= 75, "inception_v3: input must be (N, H, W, 3) ",
              "pixels with H, W >= 75 (299 for the trained weights), got ", s.str());
  // The scopes name the layers of a profile (autograd/profile.h) as torchvision names its
  // modules; they cost nothing otherwise.
  Var x;
  {
    LayerScope layer("transform_input");
    x = affine(pixels, 2.f, -1.f);  // ImageNet-normalised -> Google's [-1, 1]
  }
  x = b.stem[0]->forward(x);
  x = b.stem[1]->forward(x);
  x = b.stem[2]->forward(x);
  {
    LayerScope layer("maxpool1");
    x = max_pool2d(x, kMax3s2);
  }
  x = b.stem[3]->forward(x);
  x = b.stem[4]->forward(x);
  {
    LayerScope layer("maxpool2");
    x = max_pool2d(x, kMax3s2);
  }
  x = b.m5b.forward(x);
  x = b.m5c.forward(x);
  x = b.m5d.forward(x);
  x = b.m6a.forward(x);
  x = b.m6b.forward(x);
  x = b.m6c.forward(x);
  x = b.m6d.forward(x);
  x = b.m6e.forward(x);
  x = b.m7a.forward(x);
  x = b.m7b.forward(x);
  x = b.m7c.forward(x);
  {
    LayerScope layer("avgpool");
    x = global_avg_pool(x);  // dropout is the identity in evaluation mode
  }
  LayerScope layer("fc");
  return b.fc->forward(x);
}

void InceptionV3::fold_batch_norms() {
  for (Basic* c : b_->all) c->fold();
}

Tensor to_our_layout(const std::string& name, const Tensor& t) {
  if (t.ndim() != 4) return t;
  // OIHW -> OHWI
  const int64_t o = t.dim(0), i = t.dim(1), h = t.dim(2), w = t.dim(3);
  Tensor src = t.contiguous();
  Tensor out = Tensor::empty(Shape{o, h, w, i});
  const float* s = src.data();
  float* d = out.data();
  for (int64_t a = 0; a < o; ++a)
    for (int64_t c = 0; c < i; ++c)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) d[((a * h + y) * w + x) * i + c] = s[((a * i + c) * h + y) * w + x];
  (void)name;
  return out;
}

void InceptionV3::load_torchvision(const StateDict& state) {
  // Conv weights are compared in the file's layout (OIHW), before the permutation: a message
  // that showed a permuted file shape beside the model's OHWI one would name neither layout.
  std::map<std::string, Shape> model_shapes;
  for (auto& [name, p] : named_parameters()) model_shapes[name] = p->value().shape();
  std::vector<std::string> misshaped;
  for (const auto& [name, t] : state) {
    auto it = model_shapes.find(name);
    if (t.ndim() != 4 || it == model_shapes.end() || it->second.ndim != 4) continue;
    const Shape& m = it->second;  // (O, H, W, I)
    const Shape want{m[0], m[3], m[1], m[2]};
    if (t.shape() != want)
      misshaped.push_back(cat(name, " (file ", t.shape().str(), ", model ", want.str(), ", as PyTorch's OIHW)"));
  }
  if (!misshaped.empty()) {
    std::string list;
    for (size_t i = 0; i < misshaped.size() && i < 8; ++i) list += (i ? ", " : "") + misshaped[i];
    fail("weights do not match the model: ", misshaped.size(), " with the wrong shape: ", list,
         misshaped.size() > 8 ? ", ..." : "");
  }
  StateDict ours;
  for (const auto& [name, t] : state) {
    if (name.rfind("AuxLogits.", 0) == 0) continue;
    if (name.size() >= 20 && name.compare(name.size() - 20, 20, "num_batches_tracked") == 0) continue;
    ours[name] = to_our_layout(name, t);
  }
  for (Basic* c : b_->all)
    TRICK_CHECK(!c->folded(), "inception_v3: load_torchvision after the batch norms were folded");
  load_state_dict(ours);
  fold_batch_norms();
}

}  // namespace trick
