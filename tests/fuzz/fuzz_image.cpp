// libFuzzer target: tools/lib/image.h decode_image (PNG through libpng, JPEG through
// libjpeg-turbo, GIF through giflib, BMP through stb_image, and trick's own header checks in
// front of them). The input is the file as is (so any image can be a seed); its length's
// parity picks gray or RGB output, so both conversions run. Images are limited to 4
// megapixels (not 50): a few hundred bytes of GIF can declare a canvas of 50 megapixels,
// which takes ~25 s to fill and convert under ASan, near the fuzzer's 30 s timeout, and
// says nothing a smaller canvas does not. trick::Error is expected; anything else is a finding.
#include <cstdint>
#include <string>

#include "tests/fuzz/memfile.h"
#include "tools/lib/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int channels = (size & 1) ? 1 : 3;
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    const trick::Tensor t = trick::decode_image(bytes, "fuzz", channels, 4'000'000);
    trick_fuzz::touch(t.data(), t.numel());
  } catch (const trick::Error&) {
  }
  return 0;
}
