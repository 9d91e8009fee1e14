// PyTorch .pth state dicts read without Python: the zip archive torch.save writes since
// 1.6 and the legacy pickle stream before it (shared/FORMATS.md). Nothing the file names is
// imported or run: the pickle is read by tools/lib/pickle.h, which only recognises
// collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter and the
// torch.*Storage types.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace trick {

enum class WeightFormat { PthZip, PthLegacy, Safetensors, Unknown };

// Looks at the first bytes only: "PK\3\4" (zip), "\x80" + protocol (legacy pickle), a u64
// header length followed by '{' (safetensors). Throws if the file cannot be read.
WeightFormat detect_weight_format(const std::string& path);

struct StateDictFile {
  std::string path;
  std::string format;  // "zip" or "legacy"
  // Floating-point entries, converted to float32 (from half, bfloat16 or double) and made
  // contiguous (storage offsets and strides honoured), in the file's order.
  std::vector<std::pair<std::string, Tensor>> tensors;
  // Integer and bool entries (num_batches_tracked): read, checked, and left out.
  struct Ignored {
    std::string name;
    std::string dtype;  // "I64", "I32", ...
    std::vector<int64_t> shape;
  };
  std::vector<Ignored> ignored;
};

// Reads a torch.save'd state dict (a dict or OrderedDict of tensors) in either format.
// Throws trick::Error "<path>: <problem>" for anything else, truncated or corrupt files.
StateDictFile load_pth(const std::string& path);

}  // namespace trick
