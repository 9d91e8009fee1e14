// SHA-256 (FIPS 180-4), for naming weight files in summaries without a crypto dependency.
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
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t used_ = 0;
  uint64_t total_ = 0;
};

// Hex SHA-256 of bytes in memory.
std::string sha256_hex(const std::string& bytes);

}  // namespace trick
