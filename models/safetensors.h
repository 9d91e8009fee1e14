// safetensors weight files: a memory-mapped, fully validated reader and an atomic writer.
//
// Layout (see shared/FORMATS.md): u64 little-endian header length N, N bytes of JSON
// {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {..}}, then the
// data section; offsets are relative to its start. The reader checks the whole header
// (dtypes, shapes, byte sizes, offsets inside the data, no overlaps, no gaps) before any
// tensor data is touched, so a bad file fails at open() with one message naming the file.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace trick {

struct SafetensorsInfo {
  std::string dtype;            // as written: "F32", "F16", "BF16", "F64", "I64", ...
  std::vector<int64_t> shape;   // any number of dims (read_f32 takes at most kMaxDims)
  uint64_t begin = 0, end = 0;  // byte offsets relative to the data section
  int64_t numel() const;
  bool is_float() const;  // F32, F16, BF16 or F64: what read_f32 accepts
};

class SafetensorsFile {
 public:
  // Maps the file and validates its header; throws trick::Error "<path>: <problem>".
  static SafetensorsFile open(const std::string& path);
  // The same checks on a file's bytes held in memory (e.g. weights compiled into the
  // binary); `name` stands for the path in messages and path().
  static SafetensorsFile from_bytes(const std::string& name, std::string bytes);

  const std::string& path() const { return path_; }
  // Tensor names in the order of their data in the file.
  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const { return info_.count(name) != 0; }
  const SafetensorsInfo& info(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // The tensor as float32 with its shape. F32 data at a 4-byte aligned address is wrapped
  // without a copy (the tensor keeps the mapping alive; writes to it are copy-on-write and
  // never reach the file); F16, BF16 and F64 are converted into a new tensor.
  Tensor read_f32(const std::string& name) const;

 private:
  // Validates the header of `size` bytes at `bytes` (the whole file) and fills f's tables;
  // throws naming f.path_.
  static void parse(SafetensorsFile& f, const uint8_t* bytes, uint64_t size);
  struct Mapping;
  std::string path_;
  std::shared_ptr<Mapping> map_;
  const uint8_t* data_ = nullptr;  // start of the data section inside the mapping
  std::vector<std::string> names_;
  std::map<std::string, SafetensorsInfo> info_;
  std::map<std::string, std::string> metadata_;
};

// Writes float32 tensors (any device, any strides) in the given order, header padded with
// spaces to a multiple of 8 so the data section is 8-aligned. The file appears complete or
// not at all (AtomicFile). Throws trick::Error naming the file on a bad name or write error.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Element conversions shared with the .pth reader (IEEE half and bfloat16 bit patterns).
float f16_to_f32(uint16_t h);
float bf16_to_f32(uint16_t b);

}  // namespace trick
