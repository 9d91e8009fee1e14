// libFuzzer target: tools/lib/pth.h (zip archive and legacy stream) and the pickle VM under
// it (tools/lib/pickle.h). trick::Error is expected; anything else is a finding.
#include <cstdint>

#include "tests/fuzz/memfile.h"
#include "tools/lib/pth.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static trick_fuzz::MemFile file;
  const std::string& path = file.set(data, size);
  try {
    (void)trick::detect_weight_format(path);
    const trick::StateDictFile sd = trick::load_pth(path);
    for (const auto& [name, t] : sd.tensors) trick_fuzz::touch(t.data(), t.numel());
  } catch (const trick::Error&) {
  }
  return 0;
}
