#include "tensor/tensor.h"

#include <cstring>
#include <sstream>

namespace trick {

std::string Device::str() const { return is_cpu() ? std::string("cpu") : cat("cuda:", index); }

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda") return Device::cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    const std::string n = s.substr(5);
    TRICK_CHECK(!n.empty() && n.size() < 4 && n.find_first_not_of("0123456789") == std::string::npos,
                "device: cannot parse '", s, "' (expected cpu, cuda or cuda:N)");
    return Device::cuda(std::stoi(n));
  }
  fail("device: cannot parse '", s, "' (expected cpu, cuda or cuda:N)");
}

Shape::Shape(std::initializer_list<int64_t> dims) {
  TRICK_CHECK(dims.size() <= kMaxDims, "shape: at most ", kMaxDims, " dims, got ", dims.size());
  for (int64_t v : dims) {
    TRICK_CHECK(v >= 0, "shape: negative dimension ", v);
    d[ndim++] = v;
  }
}

Shape Shape::from(const std::vector<int64_t>& dims) {
  TRICK_CHECK(dims.size() <= kMaxDims, "shape: at most ", kMaxDims, " dims, got ", dims.size());
  Shape s;
  for (int64_t v : dims) {
    TRICK_CHECK(v >= 0, "shape: negative dimension ", v);
    s.d[s.ndim++] = v;
  }
  return s;
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= d[i];
  return n;
}

std::string Shape::str() const {
  std::ostringstream os;
  os << "(";
  for (int i = 0; i < ndim; ++i) os << (i ? ", " : "") << d[i];
  os << ")";
  return os.str();
}

bool Shape::operator==(const Shape& o) const {
  if (ndim != o.ndim) return false;
  for (int i = 0; i < ndim; ++i)
    if (d[i] != o.d[i]) return false;
  return true;
}

std::string str(const Shape& s) { return s.str(); }

void Tensor::set_contiguous_strides() {
  int64_t s = 1;
  for (int i = shape_.ndim - 1; i >= 0; --i) {
    strides_[i] = s;
    // A shape read from a file may claim more elements than int64 holds (even with a 0
    // elsewhere): refuse it here rather than overflow.
    TRICK_CHECK(!__builtin_mul_overflow(s, shape_.d[i], &s), "shape ", shape_.str(), " has too many elements");
  }
}

Tensor Tensor::empty(const Shape& shape, Device device) {
  Tensor t;
  t.shape_ = shape;
  t.device_ = device;
  t.set_contiguous_strides();
  const size_t bytes = static_cast<size_t>(shape.numel()) * sizeof(float);
  t.storage_ = std::make_shared<Storage>(bytes, device);
  t.data_ = static_cast<float*>(t.storage_->data());
  return t;
}

Tensor Tensor::zeros(const Shape& shape, Device device) { return full(shape, 0.f, device); }

Tensor Tensor::full(const Shape& shape, float value, Device device) {
  Tensor t = empty(shape, device);
  t.fill(value);
  return t;
}

Tensor Tensor::from_vector(const Shape& shape, const std::vector<float>& values) {
  TRICK_CHECK(static_cast<int64_t>(values.size()) == shape.numel(), "from_vector: ", values.size(),
              " values for shape ", shape.str());
  Tensor t = empty(shape);
  if (!values.empty()) std::memcpy(t.data_, values.data(), values.size() * sizeof(float));
  return t;
}

Tensor Tensor::wrap(const Shape& shape, float* data, std::shared_ptr<void> keep) {
  Tensor t;
  t.shape_ = shape;
  t.set_contiguous_strides();
  t.data_ = data;
  t.owner_ = std::move(keep);
  return t;
}

bool Tensor::is_contiguous() const {
  int64_t s = 1;
  for (int i = shape_.ndim - 1; i >= 0; --i) {
    if (shape_.d[i] != 1 && strides_[i] != s) return false;
    s *= shape_.d[i];
  }
  return true;
}

bool Tensor::is_row_strided() const {
  const int n = shape_.ndim;
  if (n == 0) return true;
  if (shape_.d[n - 1] != 1 && strides_[n - 1] != 1) return false;
  if (n == 1) return true;
  if (strides_[n - 2] < shape_.d[n - 1] && shape_.d[n - 2] > 1) return false;
  for (int i = n - 3; i >= 0; --i)
    if (shape_.d[i] != 1 && strides_[i] != strides_[i + 1] * shape_.d[i + 1]) return false;
  return true;
}

Tensor Tensor::slice_last(int64_t begin, int64_t end) const {
  TRICK_CHECK(shape_.ndim >= 1 && begin >= 0 && begin <= end && end <= shape_[-1], "slice_last: [",
              begin, ", ", end, ") out of range for shape ", shape_.str());
  Tensor t = *this;
  t.shape_.d[shape_.ndim - 1] = end - begin;
  t.data_ = data_ + begin * strides_[shape_.ndim - 1];
  return t;
}

Tensor Tensor::slice_first(int64_t begin, int64_t end) const {
  TRICK_CHECK(shape_.ndim >= 1 && begin >= 0 && begin <= end && end <= shape_[0], "slice_first: [",
              begin, ", ", end, ") out of range for shape ", shape_.str());
  Tensor t = *this;
  t.shape_.d[0] = end - begin;
  t.data_ = data_ + begin * strides_[0];
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  TRICK_CHECK(shape.numel() == numel(), "reshape: cannot view ", shape_.str(), " as ", shape.str());
  TRICK_CHECK(is_contiguous(), "reshape: tensor of shape ", shape_.str(), " is not contiguous");
  Tensor t = *this;
  t.shape_ = shape;
  t.set_contiguous_strides();
  return t;
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, device_);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(Device device) const {
  Tensor t = empty(shape_, device);
  t.copy_from(*this);
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  TRICK_CHECK(src.shape_ == shape_, "copy_from: shape ", src.shape_.str(), " into ", shape_.str());
  if (numel() == 0) return;
  if (is_contiguous() && src.is_contiguous()) {
    device_memcpy(data_, device_, src.data_, src.device_, numel() * sizeof(float));
    return;
  }
  if (device_.is_cpu() && src.device_.is_cpu()) {
    // General strided copy over up to 4 dims.
    Shape s = shape_;
    int64_t ds[4] = {0, 0, 0, 0}, ss[4] = {0, 0, 0, 0};
    const int off = kMaxDims - s.ndim;
    int64_t d4[4] = {1, 1, 1, 1};
    for (int i = 0; i < s.ndim; ++i) {
      d4[off + i] = s.d[i];
      ds[off + i] = strides_[i];
      ss[off + i] = src.strides_[i];
    }
    for (int64_t a = 0; a < d4[0]; ++a)
      for (int64_t b = 0; b < d4[1]; ++b)
        for (int64_t c = 0; c < d4[2]; ++c) {
          float* dp = data_ + a * ds[0] + b * ds[1] + c * ds[2];
          const float* sp = src.data_ + a * ss[0] + b * ss[1] + c * ss[2];
          if (ds[3] == 1 && ss[3] == 1) {
            std::memcpy(dp, sp, d4[3] * sizeof(float));
          } else {
            for (int64_t e = 0; e < d4[3]; ++e) dp[e * ds[3]] = sp[e * ss[3]];
          }
        }
    return;
  }
  // Across devices: both sides must be row-strided; copy row by row.
  TRICK_CHECK(is_row_strided() && src.is_row_strided(), "copy_from: strided copy between ",
              src.device_.str(), " and ", device_.str(), " needs row-strided tensors");
  const int64_t r = rows(), c = cols();
  for (int64_t i = 0; i < r; ++i)
    device_memcpy(data_ + i * ld(), device_, src.data_ + i * src.ld(), src.device_, c * sizeof(float));
}

std::vector<float> Tensor::to_vector() const {
  std::vector<float> v(static_cast<size_t>(numel()));
  if (v.empty()) return v;
  Tensor host = Tensor::wrap(shape_, v.data(), nullptr);
  host.copy_from(*this);
  return v;
}

float Tensor::item() const {
  TRICK_CHECK(numel() == 1, "item: tensor of shape ", shape_.str(), " has ", numel(), " elements");
  return to_vector()[0];
}

}  // namespace trick
