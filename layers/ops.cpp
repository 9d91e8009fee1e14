#include "layers/ops.h"

#include "autograd/profile.h"
#include "kernels/check.h"
#include "kernels/gemm.h"
#include "kernels/norm.h"
#include "kernels/pointwise.h"
#include "kernels/reduce.h"
#include "kernels/softmax.h"

namespace trick {

namespace {

bool wants(const VarPtr& v) { return v && v->requires_grad; }

Tensor output_tensor(Tensor out, const Shape& shape, Device device, const char* op) {
  if (!out.defined()) return Tensor::empty(shape, device);
  TRICK_CHECK(out.shape() == shape, op, ": destination has shape ", out.shape().str(), ", expected ", shape.str());
  TRICK_CHECK(out.device() == device, op, ": destination on ", out.device().str(), ", input on ", device.str());
  return out;
}

// A fresh tensor shaped like t, on t's device.
Tensor like(const Tensor& t) { return Tensor::empty(t.shape(), t.device()); }

// A pool's shapes for a profile: "3x3/2 147x147x64".
void pool_detail(const Tensor& x, const Pool2dParams& p) {
  if (profiling())
    profile_detail(cat(p.kernel_h, "x", p.kernel_w, p.stride_h > 1 || p.stride_w > 1 ? cat("/", p.stride_h) : "", " ",
                       x.dim(1), "x", x.dim(2), "x", x.dim(3)));
}

}  // namespace

Var conv2d(const Var& x, const Var& w, const Var& b, const Conv2dParams& p, Tensor out) {
  ProfileOp profile("conv2d");
  const Tensor& xv = x.value();
  const Tensor& wv = w.value();
  const Tensor bv = b.defined() ? b.value() : Tensor();
  Tensor y = output_tensor(out, conv2d_output_shape(xv.shape(), wv.shape(), p), xv.device(), "conv2d");
  conv2d_forward(xv, wv, bv, p, y);
  // Multiply-adds of the forward, and of dgrad and wgrad alike: one per output element and tap.
  const double flops = 2.0 * static_cast<double>(y.numel()) * static_cast<double>(wv.dim(1) * wv.dim(2) * wv.dim(3));
  profile_flops(flops);
  if (profiling())
    profile_detail(cat(wv.dim(1), "x", wv.dim(2), p.stride_h > 1 || p.stride_w > 1 ? cat("/", p.stride_h) : "", " ",
                       xv.dim(1), "x", xv.dim(2), "x", xv.dim(3), " -> ", wv.dim(0)));
  if (!any_requires_grad({&x, &w, &b})) return Var(y);
  const bool need_w = w.requires_grad() || b.requires_grad();
  const Tensor saved_x = need_w ? xv : Tensor();  // wgrad needs the input, dgrad does not
  const Tensor saved_y = p.relu ? y : Tensor();    // the ReLU mask
  return make_result(y, "conv2d", {&x, &w, &b},
                     [saved_x, saved_y, wv, p, flops](const Tensor& gy, const std::vector<VarPtr>& in) {
                       Tensor dz = gy;
                       if (p.relu) {
                         dz = like(gy);
                         relu_backward(saved_y, gy, dz, false);
                       }
                       bool acc = false;
                       if (wants(in[0])) {
                         Tensor dx = grad_destination(*in[0], &acc);
                         conv2d_dgrad(dz, wv, p, dx, acc);
                         profile_flops(flops);
                       }
                       if (wants(in[1])) {
                         Tensor dw = grad_destination(*in[1], &acc);
                         Tensor no_bias;
                         conv2d_wgrad(saved_x, dz, p, dw, no_bias, acc);
                         profile_flops(flops);
                       }
                       if (wants(in[2])) {
                         Tensor db = grad_destination(*in[2], &acc);
                         sum_rows(dz, db, acc);
                       }
                     });
}

Var relu(const Var& x) {
  ProfileOp profile("relu");
  Tensor y = like(x.value());
  unary(UnaryOp::Relu, x.value(), y);
  if (!any_requires_grad({&x})) return Var(y);
  return make_result(y, "relu", {&x}, [y](const Tensor& gy, const std::vector<VarPtr>& in) {
    bool acc = false;
    Tensor dx = grad_destination(*in[0], &acc);
    relu_backward(y, gy, dx, acc);
  });
}

Var max_pool2d(const Var& x, const Pool2dParams& p, Tensor out) {
  ProfileOp profile("max_pool2d");
  const Tensor& xv = x.value();
  Tensor y = output_tensor(out, pool2d_output_shape(xv.shape(), p, "max_pool2d"), xv.device(), "max_pool2d");
  max_pool2d_forward(xv, p, y);
  pool_detail(xv, p);
  if (!any_requires_grad({&x})) return Var(y);
  return make_result(y, "max_pool2d", {&x}, [xv, y, p](const Tensor& gy, const std::vector<VarPtr>& in) {
    bool acc = false;
    Tensor dx = grad_destination(*in[0], &acc);
    max_pool2d_backward(xv, y, gy, p, dx, acc);
  });
}

Var avg_pool2d(const Var& x, const Pool2dParams& p, Tensor out) {
  ProfileOp profile("avg_pool2d");
  const Tensor& xv = x.value();
  Tensor y = output_tensor(out, pool2d_output_shape(xv.shape(), p, "avg_pool2d"), xv.device(), "avg_pool2d");
  avg_pool2d_forward(xv, p, y);
  pool_detail(xv, p);
  if (!any_requires_grad({&x})) return Var(y);
  return make_result(y, "avg_pool2d", {&x}, [p](const Tensor& gy, const std::vector<VarPtr>& in) {
    bool acc = false;
    Tensor dx = grad_destination(*in[0], &acc);
    avg_pool2d_backward(gy, p, dx, acc);
  });
}

Var global_avg_pool(const Var& x) {
  ProfileOp profile("global_avg_pool");
  const Tensor& xv = x.value();
  check_ndim("global_avg_pool", "input", xv, 4);
  Tensor y = Tensor::empty(Shape{xv.dim(0), xv.dim(3)}, xv.device());
  global_avg_pool_forward(xv, y);
  return make_result(y, "global_avg_pool", {&x}, [](const Tensor& gy, const std::vector<VarPtr>& in) {
    bool acc = false;
    Tensor dx = grad_destination(*in[0], &acc);
    global_avg_pool_backward(gy, dx, acc);
  });
}

Var linear(const Var& x, const Var& w, const Var& b) {
  ProfileOp profile("linear");
  const Tensor& xv = x.value();
  const Tensor& wv = w.value();
  check_ndim("linear", "input", xv, 2);
  check_ndim("linear", "weight", wv, 2);
  TRICK_CHECK(xv.dim(1) == wv.dim(1), "linear: input ", xv.shape().str(), " has ", xv.dim(1),
              " features, weight ", wv.shape().str(), " expects ", wv.dim(1));
  Tensor y = Tensor::empty(Shape{xv.dim(0), wv.dim(0)}, xv.device());
  matmul_nt(xv, wv, y, false);
  if (b.defined()) add_bias(b.value(), false, y);
  const double flops = 2.0 * static_cast<double>(xv.dim(0) * wv.dim(0) * wv.dim(1));
  profile_flops(flops);
  if (profiling()) profile_detail(cat(wv.dim(1), " -> ", wv.dim(0)));
  if (!any_requires_grad({&x, &w, &b})) return Var(y);
  const Tensor saved_x = w.requires_grad() ? xv : Tensor();
  return make_result(y, "linear", {&x, &w, &b}, [saved_x, wv, flops](const Tensor& gy, const std::vector<VarPtr>& in) {
    bool acc = false;
    const Device dev = gy.device();
    if (wants(in[0])) {  // dx(N, I) = gy(N, O) * w(O, I)
      Tensor dx = grad_destination(*in[0], &acc);
      gemm(dev, false, false, gy.dim(0), wv.dim(1), wv.dim(0), 1.f, gy.data(), gy.ld(), wv.data(), wv.ld(),
           acc ? 1.f : 0.f, dx.data(), dx.ld());
      profile_flops(flops);
    }
    if (wants(in[1])) {  // dw(O, I) = gy(N, O)^T * x(N, I)
      Tensor dw = grad_destination(*in[1], &acc);
      gemm(dev, true, false, wv.dim(0), wv.dim(1), gy.dim(0), 1.f, gy.data(), gy.ld(), saved_x.data(),
           saved_x.ld(), acc ? 1.f : 0.f, dw.data(), dw.ld());
      profile_flops(flops);
    }
    if (wants(in[2])) {
      Tensor db = grad_destination(*in[2], &acc);
      sum_rows(gy, db, acc);
    }
  });
}

Var batch_norm_train(const Var& x, const Var& gamma, const Var& beta, Tensor& running_mean, Tensor& running_var,
                     float eps, float momentum) {
  ProfileOp profile("batch_norm");
  const Tensor& xv = x.value();
  const int64_t c = xv.cols();
  Tensor y = like(xv);
  Tensor mean = Tensor::empty(Shape{c}, xv.device()), invstd = Tensor::empty(Shape{c}, xv.device());
  batch_norm_train_forward(xv, gamma.value(), beta.value(), eps, momentum, running_mean, running_var, y, mean,
                           invstd);
  if (!any_requires_grad({&x, &gamma, &beta})) return Var(y);
  const Tensor gv = gamma.value();
  return make_result(y, "batch_norm", {&x, &gamma, &beta},
                     [xv, gv, mean, invstd](const Tensor& gy, const std::vector<VarPtr>& in) {
                       bool acc_x = false, acc_g = false, acc_b = false;
                       Tensor dx = wants(in[0]) ? grad_destination(*in[0], &acc_x) : Tensor();
                       Tensor dg = wants(in[1]) ? grad_destination(*in[1], &acc_g) : Tensor();
                       Tensor db = wants(in[2]) ? grad_destination(*in[2], &acc_b) : Tensor();
                       if (dg.defined() && db.defined() && acc_g != acc_b) {  // rare: gradients out of step
                         Tensor tg = like(dg), tb = like(db);
                         batch_norm_backward(xv, gy, gv, mean, invstd, dx, acc_x, tg, tb, false);
                         acc_g ? axpy(1.f, tg, dg) : copy(tg, dg);
                         acc_b ? axpy(1.f, tb, db) : copy(tb, db);
                         return;
                       }
                       batch_norm_backward(xv, gy, gv, mean, invstd, dx, acc_x, dg, db, acc_g || acc_b);
                     });
}

Var channel_affine(const Var& x, const Tensor& scale, const Tensor& shift, bool relu) {
  ProfileOp profile("channel_affine");
  Tensor y = like(x.value());
  ::trick::channel_affine(x.value(), scale, shift, relu, y);
  if (!any_requires_grad({&x})) return Var(y);
  return make_result(y, "channel_affine", {&x},
                     [y, scale, relu](const Tensor& gy, const std::vector<VarPtr>& in) {
                       // dx = gy * scale (per channel), masked by the ReLU
                       Tensor g = gy;
                       if (relu) {
                         g = like(gy);
                         relu_backward(y, gy, g, false);
                       }
                       Tensor zero = Tensor::zeros(scale.shape(), scale.device());
                       bool acc = false;
                       Tensor dx = grad_destination(*in[0], &acc);
                       if (acc) {
                         Tensor t = like(g);
                         ::trick::channel_affine(g, scale, zero, false, t);
                         axpy(1.f, t, dx);
                       } else {
                         ::trick::channel_affine(g, scale, zero, false, dx);
                       }
                     });
}

Var concat_into(const std::vector<Var>& parts, Tensor out) {
  ProfileOp profile("concat");
  TRICK_CHECK(!parts.empty(), "concat: no inputs");
  const Tensor& first = parts[0].value();
  int64_t total = 0;
  for (const Var& v : parts) {
    const Tensor& t = v.value();
    TRICK_CHECK(t.ndim() == first.ndim() && t.device() == first.device(), "concat: input of shape ",
                t.shape().str(), " does not match ", first.shape().str());
    for (int i = 0; i + 1 < t.ndim(); ++i)
      TRICK_CHECK(t.dim(i) == first.dim(i), "concat: input of shape ", t.shape().str(), " does not match ",
                  first.shape().str(), " outside the last dim");
    total += t.cols();
  }
  Shape s = first.shape();
  s.d[s.ndim - 1] = total;
  out = output_tensor(out, s, first.device(), "concat");
  std::vector<int64_t> offsets;
  int64_t c0 = 0;
  for (const Var& v : parts) {
    const Tensor& t = v.value();
    Tensor slot = out.slice_last(c0, c0 + t.cols());
    if (t.data() != slot.data() || t.ld() != slot.ld()) copy(t, slot);  // else: already written in place
    offsets.push_back(c0);
    c0 += t.cols();
  }
  return make_result(out, "concat", parts, [offsets](const Tensor& gy, const std::vector<VarPtr>& in) {
    for (size_t i = 0; i < in.size(); ++i)
      if (wants(in[i])) {
        const int64_t c = in[i]->value.cols();
        // Disjoint slices of the concat's gradient, which nothing reads after this node.
        accumulate_grad(*in[i], gy.slice_last(offsets[i], offsets[i] + c), true);
      }
  });
}

Var concat(const std::vector<Var>& parts) { return concat_into(parts, Tensor()); }

Var concat_batch(const std::vector<Var>& parts) {
  ProfileOp profile("concat_batch");
  TRICK_CHECK(!parts.empty(), "concat_batch: no inputs");
  if (parts.size() == 1) return parts[0];
  const Tensor& first = parts[0].value();
  int64_t total = 0;
  for (const Var& v : parts) {
    const Tensor& t = v.value();
    TRICK_CHECK(t.ndim() == first.ndim() && t.device() == first.device(), "concat_batch: input of shape ",
                t.shape().str(), " does not match ", first.shape().str());
    for (int i = 1; i < t.ndim(); ++i)
      TRICK_CHECK(t.dim(i) == first.dim(i), "concat_batch: input of shape ", t.shape().str(), " does not match ",
                  first.shape().str(), " outside the first dim");
    total += t.dim(0);
  }
  Shape s = first.shape();
  s.d[0] = total;
  Tensor out = Tensor::empty(s, first.device());
  std::vector<int64_t> offsets;
  int64_t n0 = 0;
  for (const Var& v : parts) {
    Tensor slot = out.slice_first(n0, n0 + v.value().dim(0));
    slot.copy_from(v.value());
    offsets.push_back(n0);
    n0 += v.value().dim(0);
  }
  return make_result(out, "concat_batch", parts, [offsets](const Tensor& gy, const std::vector<VarPtr>& in) {
    for (size_t i = 0; i < in.size(); ++i)
      if (wants(in[i])) accumulate_grad(*in[i], gy.slice_first(offsets[i], offsets[i] + in[i]->value.dim(0)), true);
  });
}

Var softmax(const Var& x) {
  ProfileOp profile("softmax");
  Tensor y = like(x.value());
  ::trick::softmax(x.value(), y);
  if (!any_requires_grad({&x})) return Var(y);
  return make_result(y, "softmax", {&x}, [y](const Tensor& gy, const std::vector<VarPtr>& in) {
    bool acc = false;
    Tensor dx = grad_destination(*in[0], &acc);
    softmax_backward(y, gy, dx, acc);
  });
}

Var log_softmax(const Var& x) {
  ProfileOp profile("log_softmax");
  Tensor y = like(x.value());
  ::trick::log_softmax(x.value(), y);
  if (!any_requires_grad({&x})) return Var(y);
  return make_result(y, "log_softmax", {&x}, [y](const Tensor& gy, const std::vector<VarPtr>& in) {
    bool acc = false;
    Tensor dx = grad_destination(*in[0], &acc);
    log_softmax_backward(y, gy, dx, acc);
  });
}

Var cross_entropy(const Var& logits, const Tensor& targets) {
  ProfileOp profile("cross_entropy");
  const Tensor& lv = logits.value();
  check_ndim("cross_entropy", "logits", lv, 2);
  Tensor probs = like(lv);
  Tensor losses = Tensor::empty(Shape{lv.dim(0)}, lv.device());
  cross_entropy_forward(lv, targets, probs, losses);
  if (!any_requires_grad({&logits})) return Var(losses);
  return make_result(losses, "cross_entropy", {&logits},
                     [probs, targets](const Tensor& gy, const std::vector<VarPtr>& in) {
                       bool acc = false;
                       Tensor dx = grad_destination(*in[0], &acc);
                       cross_entropy_backward(probs, targets, gy, dx, acc);
                     });
}

namespace {
Var binary_op(BinaryOp op, const char* name, const Var& a, const Var& b) {
  ProfileOp profile(name);
  Tensor y = like(a.value());
  binary(op, a.value(), b.value(), y);
  if (!any_requires_grad({&a, &b})) return Var(y);
  const Tensor av = op == BinaryOp::Mul && b.requires_grad() ? a.value() : Tensor();
  const Tensor bv = op == BinaryOp::Mul && a.requires_grad() ? b.value() : Tensor();
  return make_result(y, name, {&a, &b}, [op, av, bv](const Tensor& gy, const std::vector<VarPtr>& in) {
    for (int i = 0; i < 2; ++i) {
      if (!wants(in[i])) continue;
      bool acc = false;
      Tensor d = grad_destination(*in[i], &acc);
      if (op == BinaryOp::Mul) {
        mul_accumulate(gy, i == 0 ? bv : av, d, acc);
      } else {
        const float s = (op == BinaryOp::Sub && i == 1) ? -1.f : 1.f;
        if (acc)
          axpy(s, gy, d);
        else
          unary(UnaryOp::Affine, gy, d, s, 0.f);
      }
    }
  });
}
}  // namespace

Var add(const Var& a, const Var& b) { return binary_op(BinaryOp::Add, "add", a, b); }
Var sub(const Var& a, const Var& b) { return binary_op(BinaryOp::Sub, "sub", a, b); }
Var mul(const Var& a, const Var& b) { return binary_op(BinaryOp::Mul, "mul", a, b); }

Var affine(const Var& x, float a, float b) {
  ProfileOp profile("affine");
  Tensor y = like(x.value());
  unary(UnaryOp::Affine, x.value(), y, a, b);
  if (!any_requires_grad({&x})) return Var(y);
  return make_result(y, "affine", {&x}, [a](const Tensor& gy, const std::vector<VarPtr>& in) {
    bool acc = false;
    Tensor dx = grad_destination(*in[0], &acc);
    if (acc)
      axpy(a, gy, dx);
    else
      unary(UnaryOp::Affine, gy, dx, a, 0.f);
  });
}

Var clamp(const Var& x, float lo, float hi) {
  ProfileOp profile("clamp");
  Tensor y = like(x.value());
  unary(UnaryOp::Clamp, x.value(), y, lo, hi);
  if (!any_requires_grad({&x})) return Var(y);
  const Tensor xv = x.value();
  return make_result(y, "clamp", {&x}, [xv, lo, hi](const Tensor& gy, const std::vector<VarPtr>& in) {
    bool acc = false;
    Tensor dx = grad_destination(*in[0], &acc);
    clamp_backward(xv, lo, hi, gy, dx, acc);
  });
}

Var tanh(const Var& x) {
  ProfileOp profile("tanh");
  Tensor y = like(x.value());
  unary(UnaryOp::Tanh, x.value(), y);
  if (!any_requires_grad({&x})) return Var(y);
  return make_result(y, "tanh", {&x}, [y](const Tensor& gy, const std::vector<VarPtr>& in) {
    Tensor d = like(y);  // 1 - y^2
    unary(UnaryOp::Square, y, d);
    unary(UnaryOp::Affine, d, d, -1.f, 1.f);
    bool acc = false;
    Tensor dx = grad_destination(*in[0], &acc);
    mul_accumulate(gy, d, dx, acc);
  });
}

Var sign(const Var& x) {
  ProfileOp profile("sign");
  Tensor y = like(x.value());
  unary(UnaryOp::Sign, x.value(), y);
  return Var(y);
}

Var sum(const Var& x) {
  ProfileOp profile("sum");
  Tensor y = Tensor::empty(Shape{1}, x.value().device());
  sum_all(x.value(), y);
  return make_result(y, "sum", {&x}, [](const Tensor& gy, const std::vector<VarPtr>& in) {
    Tensor g = Tensor::full(in[0]->value.shape(), gy.item(), gy.device());
    accumulate_grad(*in[0], g, true);
  });
}

Var mean(const Var& x) {
  ProfileOp profile("mean");
  const int64_t n = x.value().numel();
  TRICK_CHECK(n > 0, "mean: empty input of shape ", x.value().shape().str());
  Tensor y = Tensor::empty(Shape{1}, x.value().device());
  sum_all(x.value(), y);
  unary(UnaryOp::Affine, y, y, 1.f / static_cast<float>(n), 0.f);
  return make_result(y, "mean", {&x}, [n](const Tensor& gy, const std::vector<VarPtr>& in) {
    Tensor g = Tensor::full(in[0]->value.shape(), gy.item() / static_cast<float>(n), gy.device());
    accumulate_grad(*in[0], g, true);
  });
}

Var max(const Var& x) {
  ProfileOp profile("max");
  Tensor y = Tensor::empty(Shape{1}, x.value().device());
  int64_t at = 0;
  max_all(x.value(), y, &at);
  return make_result(y, "max", {&x}, [at](const Tensor& gy, const std::vector<VarPtr>& in) {
    Tensor g = Tensor::zeros(in[0]->value.shape(), gy.device());
    const float v = gy.item();
    device_memcpy(g.data() + at, g.device(), &v, Device::cpu(), sizeof(float));
    accumulate_grad(*in[0], g, true);
  });
}

Var reshape(const Var& x, const Shape& shape) {
  ProfileOp profile("reshape");
  Tensor y = x.value().contiguous().reshape(shape);
  if (!any_requires_grad({&x})) return Var(y);
  const Shape from = x.value().shape();
  return make_result(y, "reshape", {&x}, [from](const Tensor& gy, const std::vector<VarPtr>& in) {
    accumulate_grad(*in[0], gy.contiguous().reshape(from), false);
  });
}

Var dropout(const Var& x, float p, Rng& rng, bool training) {
  ProfileOp profile("dropout");
  TRICK_CHECK(p >= 0.f && p < 1.f, "dropout: probability ", p, " outside [0, 1)");
  if (!training || p == 0.f) return x;
  Tensor mask = Tensor::empty(x.value().shape());
  const float keep = 1.f / (1.f - p);
  for (int64_t i = 0; i < mask.numel(); ++i) mask.data()[i] = rng.uniform() < p ? 0.f : keep;
  return mul(x, Var(mask.to(x.value().device())));
}

}  // namespace trick
