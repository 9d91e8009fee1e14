// NumPy .npy files of float32 tensors (format 1.0 written; 1.0, 2.0 and 3.0 read).
// For users who inspect model inputs and gradients in Python, and for parity tests.
#pragma once
#include <string>

#include "tensor/tensor.h"

namespace trick {

// Writes '<f4', C order, the tensor's shape (any device and strides), atomically.
void save_npy(const std::string& path, const Tensor& t);
// The .npy file's bytes.
std::string encode_npy(const Tensor& t);

// Reads a little-endian float32 C-order array of 0 to 4 dims (0-D becomes shape (1)).
// Throws trick::Error naming the file on anything else.
Tensor load_npy(const std::string& path);
Tensor decode_npy(const std::string& bytes, const std::string& name);

}  // namespace trick
