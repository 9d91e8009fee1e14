// IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or plain.
//
// Layout: a big-endian u32 magic 0x000008DD (0x08 = unsigned bytes, DD = number of dims),
// one big-endian u32 per dim, then the bytes row-major. Images are 0x00000803
// (count, rows, cols), labels 0x00000801 (count). Everything is validated before use: the
// magic, the dims, the data length (short or trailing data is an error) and every label;
// errors are trick::Error "<path>: <problem>".
#pragma once
#include <string>

#include "tensor/tensor.h"

namespace trick {

// A declared file larger than this (after decompression) is refused before reading it.
constexpr int64_t kMaxIdxBytes = int64_t{1} << 31;

// images: (N, rows, cols, 1) float32 in [0, 1] (byte / 255), on the host.
Tensor read_idx_images(const std::string& path);
// labels: (N) class indices as floats; every label must be < classes.
Tensor read_idx_labels(const std::string& path, int classes = 10);

struct IdxDataset {
  Tensor images;  // (N, rows, cols, 1) in [0, 1]
  Tensor labels;  // (N) class indices as floats
  int64_t size() const { return labels.defined() ? labels.dim(0) : 0; }
};

// An images file and its labels file; their counts must agree.
IdxDataset read_idx_pair(const std::string& images_path, const std::string& labels_path, int classes = 10);

// Fashion-MNIST from the Debian package's layout: dir/{train,t10k}-images-idx3-ubyte.gz and
// the matching labels (the uncompressed names without .gz are accepted too). split is
// "train" or "test"; images must be 28x28.
constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
IdxDataset read_fashion_mnist(const std::string& dir, const std::string& split);

}  // namespace trick
