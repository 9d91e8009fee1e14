#include "tools/lib/atomic_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <set>

#include "tensor/error.h"

namespace trick {

namespace {
std::mutex g_mu;
std::set<std::string>& open_temps() {
  static std::set<std::string>* s = new std::set<std::string>();
  return *s;
}
std::atomic<unsigned> g_counter{0};
}  // namespace

AtomicFile::AtomicFile(const std::string& path) : path_(path) {
  temp_ = cat(path, ".tmp-", getpid(), "-", g_counter++);
  f_ = std::fopen(temp_.c_str(), "wb");
  TRICK_CHECK(f_, "cannot write ", path, ": ", std::strerror(errno));
  std::lock_guard<std::mutex> lock(g_mu);
  open_temps().insert(temp_);
}

AtomicFile::~AtomicFile() {
  if (committed_) return;
  if (f_) std::fclose(f_);
  std::remove(temp_.c_str());
  std::lock_guard<std::mutex> lock(g_mu);
  open_temps().erase(temp_);
}

void AtomicFile::write(const void* data, size_t bytes) {
  TRICK_CHECK(f_ && !committed_, "write to ", path_, " after it was committed");
  if (bytes && std::fwrite(data, 1, bytes, f_) != bytes) fail("cannot write ", path_, ": ", std::strerror(errno));
}

void AtomicFile::commit() {
  TRICK_CHECK(f_ && !committed_, "commit of ", path_, " twice");
  const bool ok = std::fflush(f_) == 0 && fsync(fileno(f_)) == 0;
  const int err = errno;
  const bool closed = std::fclose(f_) == 0;
  f_ = nullptr;
  if (!ok || !closed) {
    std::remove(temp_.c_str());
    fail("cannot write ", path_, ": ", std::strerror(err));
  }
  if (std::rename(temp_.c_str(), path_.c_str()) != 0) {
    const int e = errno;
    std::remove(temp_.c_str());
    fail("cannot write ", path_, ": ", std::strerror(e));
  }
  committed_ = true;
  std::lock_guard<std::mutex> lock(g_mu);
  open_temps().erase(temp_);
}

void atomic_write(const std::string& path, const std::string& bytes) {
  AtomicFile f(path);
  f.write(bytes.data(), bytes.size());
  f.commit();
}

void ensure_directory(const std::string& dir) {
  TRICK_CHECK(!dir.empty(), "empty output directory name");
  struct stat st;
  if (stat(dir.c_str(), &st) == 0) {
    TRICK_CHECK(S_ISDIR(st.st_mode), "output directory ", dir, " exists and is not a directory");
    TRICK_CHECK(access(dir.c_str(), W_OK) == 0, "output directory ", dir, " is not writable");
    return;
  }
  const size_t slash = dir.find_last_of('/');
  if (slash != std::string::npos && slash > 0) ensure_directory(dir.substr(0, slash));
  if (mkdir(dir.c_str(), 0777) != 0 && errno != EEXIST)
    fail("cannot create output directory ", dir, ": ", std::strerror(errno));
}

void check_output_file(const std::string& path) {
  TRICK_CHECK(!path.empty(), "empty output file name");
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) fail("cannot write ", path, ": ", std::strerror(EISDIR));
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  if (stat(dir.c_str(), &st) != 0) fail("cannot write ", path, ": ", std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) fail("cannot write ", path, ": ", std::strerror(ENOTDIR));
  if (access(dir.c_str(), W_OK) != 0) fail("cannot write ", path, ": ", std::strerror(errno));
}

void remove_open_temporaries() {
  // Called from signal context paths: no allocation beyond what the set already holds.
  for (const std::string& t : open_temps()) unlink(t.c_str());
}

}  // namespace trick
