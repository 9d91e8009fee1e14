// libFuzzer target: tools/lib/npy.h decode_npy (versions 1.0-3.0 headers, dtype, shape,
// data length). trick::Error is expected; anything else is a finding.
#include <cstdint>
#include <string>

#include "tests/fuzz/memfile.h"
#include "tools/lib/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    const trick::Tensor t = trick::decode_npy(bytes, "fuzz");
    trick_fuzz::touch(t.data(), t.numel());
  } catch (const trick::Error&) {
  }
  return 0;
}
