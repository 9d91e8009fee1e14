// Tensor: shapes, strides, views, copies.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tensor/cpu_check.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace test_tensor {

using namespace trick;

TEST_CASE("tensor: creation, shape and contiguous strides") {
  Tensor t = Tensor::full(Shape{2, 3, 4, 5}, 1.5f);
  CHECK(t.numel() == 120);
  CHECK(t.stride(0) == 60);
  CHECK(t.stride(1) == 20);
  CHECK(t.stride(2) == 5);
  CHECK(t.stride(3) == 1);
  CHECK(t.is_contiguous());
  CHECK(t.is_row_strided());
  CHECK(t.rows() == 24);
  CHECK(t.cols() == 5);
  CHECK(t.ld() == 5);
  for (float v : t.to_vector()) REQUIRE(v == 1.5f);
  CHECK(Tensor::zeros(Shape{0, 3}).numel() == 0);
  CHECK_THROWS_AS(Shape({1, 2, 3, 4, 5}), Error);
  CHECK_THROWS_AS(Shape({2, -1}), Error);
}

TEST_CASE("tensor: channel slices share storage, are row-strided, and write through") {
  Tensor block = Tensor::zeros(Shape{2, 3, 3, 8});
  Tensor s = block.slice_last(2, 5);
  CHECK(s.shape() == Shape{2, 3, 3, 3});
  CHECK(s.ld() == 8);
  CHECK_FALSE(s.is_contiguous());
  CHECK(s.is_row_strided());
  CHECK(s.same_storage(block));
  s.fill(7.f);
  const std::vector<float> v = block.to_vector();
  for (size_t i = 0; i < v.size(); ++i) {
    const size_t ch = i % 8;
    REQUIRE(v[i] == ((ch >= 2 && ch < 5) ? 7.f : 0.f));
  }
  // to_vector of a slice gives its own values in row-major order.
  CHECK(s.to_vector() == std::vector<float>(54, 7.f));
  CHECK_THROWS_WITH_AS(block.slice_last(3, 9), doctest::Contains("slice_last: [3, 9) out of range"), Error);
}

TEST_CASE("tensor: batch slices, reshape, clone, copy_from between strides") {
  Rng rng(1);
  Tensor t = randn(Shape{4, 2, 3}, rng);
  Tensor b = t.slice_first(1, 3);
  CHECK(b.shape() == Shape{2, 2, 3});
  CHECK(b.is_contiguous());
  const std::vector<float> all = t.to_vector();
  CHECK(b.to_vector() == std::vector<float>(all.begin() + 6, all.begin() + 18));
  Tensor r = t.reshape(Shape{8, 3});
  CHECK(r.same_storage(t));
  CHECK_THROWS_WITH_AS(t.reshape(Shape{5, 5}), doctest::Contains("cannot view (4, 2, 3) as (5, 5)"), Error);
  Tensor c = t.clone();
  CHECK_FALSE(c.same_storage(t));
  CHECK(c.to_vector() == all);
  // A strided source into a strided destination.
  Tensor src = randn(Shape{3, 7}, rng).slice_last(1, 5);
  Tensor dst_block = Tensor::zeros(Shape{3, 6});
  Tensor dst = dst_block.slice_last(2, 6);
  dst.copy_from(src);
  CHECK(dst.to_vector() == src.to_vector());
  CHECK_THROWS_AS(dst.copy_from(Tensor::zeros(Shape{3, 3})), Error);
  CHECK_THROWS_WITH_AS(src.reshape(Shape{12}), doctest::Contains("not contiguous"), Error);
}

TEST_CASE("tensor: devices parse, and CUDA without a device is a clear error") {
  CHECK(parse_device("cpu").is_cpu());
  CHECK(parse_device("cuda:1").index == 1);
  CHECK_THROWS_WITH_AS(parse_device("gpu"), doctest::Contains("cannot parse 'gpu'"), Error);
  if (!cuda_available()) {
    CHECK_THROWS_AS(Tensor::empty(Shape{4}, Device::cuda(0)), Error);
  } else {
    Rng rng(2);
    Tensor h = randn(Shape{3, 5}, rng);
    CHECK(h.to(Device::cuda(0)).to(Device::cpu()).to_vector() == h.to_vector());
  }
}

TEST_CASE("tensor: sizes in messages read as bytes, KiB, MiB or GiB") {
  CHECK(byte_size(0) == "0 bytes");
  CHECK(byte_size(1023) == "1023 bytes");
  CHECK(byte_size(1536) == "1.50 KiB");
  CHECK(byte_size(62668) == "61.2 KiB");
  CHECK(byte_size(2 << 20) == "2.00 MiB");
  CHECK(byte_size(138240.0 * 1024) == "135 MiB");
  CHECK(byte_size(140.0 * (1 << 30)) == "140 GiB");
}

TEST_CASE("tensor: the random generator is reproducible and roughly standard normal") {
  Rng a(42), b(42);
  for (int i = 0; i < 10; ++i) REQUIRE(a.next_u64() == b.next_u64());
  Rng r(3);
  Tensor t = randn(Shape{20000}, r);
  double m = 0, v = 0;
  for (float x : t.to_vector()) m += x / 20000.0;
  for (float x : t.to_vector()) v += (x - m) * (x - m) / 20000.0;
  CHECK(std::abs(m) < 0.03);
  CHECK(std::abs(v - 1.0) < 0.05);
}

TEST_CASE("cpu check: the instruction sets this build targets, and which this CPU lacks") {
  const std::vector<std::string> built = built_cpu_features();
  // The build runs its tests where it was built: nothing missing (else this binary would have
  // stopped with its error line before any test ran).
  CHECK(missing_cpu_features().empty());
  CHECK(missing_cpu_features([](const std::string&) { return true; }).empty());
  CHECK(missing_cpu_features([](const std::string&) { return false; }) == built);
  const auto has = [&](const char* f) { return std::count(built.begin(), built.end(), f) == 1; };
#ifdef __AVX2__
  CHECK(has("avx2"));
#else
  CHECK_FALSE(has("avx2"));
#endif
#ifdef __AVX512F__
  CHECK(has("avx512f"));
#else
  CHECK_FALSE(has("avx512f"));
#endif
  // One named missing: just that one reported.
  if (has("avx2")) CHECK(missing_cpu_features([](const std::string& f) { return f != "avx2"; }) ==
                         std::vector<std::string>{"avx2"});
}

}  // namespace test_tensor
