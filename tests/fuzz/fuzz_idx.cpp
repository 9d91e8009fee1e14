// libFuzzer target: tools/lib/idx.h, IDX images and labels files, gzip-compressed or plain.
// The input is the file as is (so any IDX file can be a seed), read by both readers.
// trick::Error is expected; anything else is a finding.
#include <cstdint>

#include "tests/fuzz/memfile.h"
#include "tools/lib/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static trick_fuzz::MemFile file;
  const std::string& path = file.set(data, size);
  try {
    const trick::Tensor images = trick::read_idx_images(path);
    trick_fuzz::touch(images.data(), images.numel());
  } catch (const trick::Error&) {
  }
  try {
    const trick::Tensor labels = trick::read_idx_labels(path, 10);
    trick_fuzz::touch(labels.data(), labels.numel());
  } catch (const trick::Error&) {
  }
  return 0;
}
