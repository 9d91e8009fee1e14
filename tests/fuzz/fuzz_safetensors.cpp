// libFuzzer target: models/safetensors.h, the header validation and every tensor read.
// trick::Error is the expected outcome of a bad file; anything else (a crash, a sanitizer
// report, another exception type) is a finding.
#include <cstdint>

#include "models/safetensors.h"
#include "tests/fuzz/memfile.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static trick_fuzz::MemFile file;
  const std::string& path = file.set(data, size);
  try {
    const trick::SafetensorsFile f = trick::SafetensorsFile::open(path);
    for (const std::string& name : f.names()) {
      const trick::SafetensorsInfo& info = f.info(name);
      (void)info.numel();
      if (!info.is_float()) continue;
      try {
        const trick::Tensor t = f.read_f32(name);
        trick_fuzz::touch(t.data(), t.numel());
      } catch (const trick::Error&) {
        // e.g. more dims than a Tensor holds: refused per tensor, the others still read
      }
    }
  } catch (const trick::Error&) {
  }
  return 0;
}
