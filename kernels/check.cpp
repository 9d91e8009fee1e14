#include "kernels/check.h"

namespace trick {

Device check_same_device(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t || !t->defined()) continue;
    if (!first) {
      first = t;
      continue;
    }
    TRICK_CHECK(t->device() == first->device(), op, ": tensors on different devices (", first->device().str(),
                " and ", t->device().str(), ")");
  }
  return first ? first->device() : Device::cpu();
}

void check_defined(const char* op, const char* name, const Tensor& t) {
  TRICK_CHECK(t.defined(), op, ": ", name, " is undefined");
}

void check_row_strided(const char* op, const char* name, const Tensor& t) {
  check_defined(op, name, t);
  TRICK_CHECK(t.is_row_strided(), op, ": ", name, " of shape ", t.shape().str(),
              " must have a contiguous last dim and uniformly strided rows");
}

void check_contiguous(const char* op, const char* name, const Tensor& t) {
  check_defined(op, name, t);
  TRICK_CHECK(t.is_contiguous(), op, ": ", name, " of shape ", t.shape().str(), " must be contiguous");
}

void check_shape(const char* op, const char* name, const Tensor& t, const Shape& want) {
  check_defined(op, name, t);
  TRICK_CHECK(t.shape() == want, op, ": ", name, " has shape ", t.shape().str(), ", expected ", want.str());
}

void check_same_shape(const char* op, const char* a_name, const Tensor& a, const char* b_name, const Tensor& b) {
  check_defined(op, a_name, a);
  check_defined(op, b_name, b);
  TRICK_CHECK(a.shape() == b.shape(), op, ": ", a_name, " has shape ", a.shape().str(), " but ", b_name,
              " has shape ", b.shape().str());
}

void check_ndim(const char* op, const char* name, const Tensor& t, int ndim) {
  check_defined(op, name, t);
  TRICK_CHECK(t.ndim() == ndim, op, ": ", name, " must be ", ndim, "-D, got shape ", t.shape().str());
}

void no_cuda(const char* op) { fail(op, ": this build of trick has no CUDA support"); }

}  // namespace trick
