// Tensor: up to 4-D float32 data on a Device, with strides, shared storage and views.
//
// Activations are NHWC. The views the library needs are "row-strided": every dim but the
// last collapses into rows with one row stride `ld` >= the last dim, the last dim is
// contiguous. A channel slice of an NHWC tensor is such a view, so a branch of an
// Inception block can write straight into its slice of the block output and concat is free.
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "tensor/error.h"

namespace trick {

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  static Device cpu() { return {DeviceType::CPU, 0}; }
  static Device cuda(int i = 0) { return {DeviceType::CUDA, i}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const;  // "cpu", "cuda:0"
};

// Parses "cpu", "cuda", "cuda:N"; throws on anything else.
Device parse_device(const std::string& s);

constexpr int kMaxDims = 4;

struct Shape {
  int ndim = 0;
  int64_t d[kMaxDims] = {1, 1, 1, 1};
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  static Shape from(const std::vector<int64_t>& dims);
  int64_t operator[](int i) const { return d[i < 0 ? i + ndim : i]; }
  int64_t numel() const;
  std::vector<int64_t> vec() const { return std::vector<int64_t>(d, d + ndim); }
  std::string str() const;  // "(2, 3, 4)"
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }
};

// Tests: every new host block (every CPU Tensor::empty) is filled with NaN, so a kernel
// that leaves part of its output unwritten fails whatever memory the allocator hands back.
// Off by default (tests/main.cpp turns it on); not thread-safe to change while tensors are made.
void set_poison_new_host_memory(bool on);

// Owns a block of bytes on one device. Allocated once, freed on destruction.
class Storage {
 public:
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
};

class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false
  static Tensor empty(const Shape& shape, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, Device device = Device::cpu());
  static Tensor full(const Shape& shape, float value, Device device = Device::cpu());
  static Tensor from_vector(const Shape& shape, const std::vector<float>& values);
  // A tensor over memory someone else owns (e.g. a memory-mapped weight file); `keep`
  // holds that memory alive for as long as any view exists.
  static Tensor wrap(const Shape& shape, float* data, std::shared_ptr<void> keep);

  bool defined() const { return static_cast<bool>(storage_) || data_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return shape_.ndim; }
  int64_t dim(int i) const { return shape_[i]; }
  int64_t numel() const { return shape_.numel(); }
  int64_t stride(int i) const { return strides_[i < 0 ? i + shape_.ndim : i]; }
  Device device() const { return device_; }
  float* data() const { return data_; }

  bool is_contiguous() const;
  // Row-strided: the last dim contiguous, the others collapse into rows() rows of stride ld().
  bool is_row_strided() const;
  int64_t cols() const { return shape_.ndim ? shape_[-1] : 1; }
  int64_t rows() const { return cols() ? numel() / cols() : 0; }
  int64_t ld() const { return shape_.ndim >= 2 ? strides_[shape_.ndim - 2] : cols(); }

  // Views (share storage).
  Tensor slice_last(int64_t begin, int64_t end) const;   // channels [begin, end) of the last dim
  Tensor slice_first(int64_t begin, int64_t end) const;  // batch items [begin, end)
  Tensor reshape(const Shape& shape) const;              // contiguous tensors only
  // Copies.
  Tensor contiguous() const;  // itself if already contiguous
  Tensor clone() const;
  Tensor to(Device device) const;  // explicit host<->device copy
  void copy_from(const Tensor& src);  // same shape; any strides; any devices
  void fill(float value);

  std::vector<float> to_vector() const;  // row-major values, copied to the host
  float item() const;                    // a one-element tensor's value
  bool same_storage(const Tensor& o) const { return storage_ && storage_ == o.storage_; }
  const std::shared_ptr<void>& owner() const { return owner_; }

 private:
  std::shared_ptr<Storage> storage_;
  std::shared_ptr<void> owner_;  // keeps wrapped external memory alive
  float* data_ = nullptr;        // first element of this view
  Shape shape_;
  int64_t strides_[kMaxDims] = {0, 0, 0, 0};
  Device device_;
  void set_contiguous_strides();
};

// "(2, 3)" for error messages.
std::string str(const Shape& s);

// Raw copies between devices; no-ops on CPU-only builds except host->host.
void device_memcpy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);
// Compiled with CUDA, a device with a working driver is present, and this build's kernels run
// on the first one (cuda:0). The device chosen by default, and what the GPU tests need.
bool cuda_available();
int cuda_device_count();  // what the driver reports, usable or not; 0 without a driver
// Why cuda:index cannot run this build ("" when it can): no driver, no such device ("only N CUDA
// devices"), or no code for its architecture in the binary (kernels/cuda/runtime.h,
// library_kernel_problem). Asked once per device.
std::string cuda_device_problem(int index);

}  // namespace trick
