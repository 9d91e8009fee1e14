// SHA-256 (FIPS 180-4), for naming weight files in summaries without a crypto dependency.
// Blocks go through the x86 SHA extensions (SHA-NI) where the CPU has them (about 2 GB/s on
// one core against 0.25 GB/s for the portable code: 0.05 s instead of 0.4 s for Inception
// v3's 109 MB, hashed by every attack run), else through the portable rounds.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace trick {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t bytes);
  std::string hex_digest();  // finishes the hash; call once

 private:
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t used_ = 0;
  uint64_t total_ = 0;
};

// Hex SHA-256 of bytes in memory.
std::string sha256_hex(const std::string& bytes);

// The compression function on n 64-byte blocks, both ways (tests compare them).
namespace sha256_detail {
void blocks_portable(uint32_t h[8], const uint8_t* p, size_t n);
bool has_sha_ni();                                         // the CPU has SHA-NI and SSE4.1
void blocks_sha_ni(uint32_t h[8], const uint8_t* p, size_t n);  // only where has_sha_ni()
}  // namespace sha256_detail

}  // namespace trick
