// The fuzz targets' inputs as files: the readers under test take a path (they mmap or
// gzopen it), so each input is written to an anonymous in-memory file (memfd) and passed as
// /proc/self/fd/N. No disk traffic, nothing left behind.
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace trick_fuzz {

class MemFile {
 public:
  MemFile() {
    fd_ = memfd_create("trick-fuzz", MFD_CLOEXEC);
    if (fd_ < 0) {
      std::perror("memfd_create");
      std::abort();  // the harness itself is broken: stop, not a finding
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~MemFile() { close(fd_); }
  // Replaces the file's contents with data[0, size).
  const std::string& set(const uint8_t* data, size_t size) {
    if (ftruncate(fd_, 0) != 0 || (size && pwrite(fd_, data, size, 0) != static_cast<ssize_t>(size))) {
      std::perror("memfd write");
      std::abort();
    }
    return path_;
  }

 private:
  int fd_ = -1;
  std::string path_;
};

// Reads every element, so a tensor pointing outside its memory faults here (under ASan for
// heap memory, as a segfault for an mmap'd file) instead of going unnoticed.
inline float touch(const float* p, int64_t n) {
  volatile float s = 0.f;
  for (int64_t i = 0; i < n; ++i) s = s + p[i];
  return s;
}

}  // namespace trick_fuzz
