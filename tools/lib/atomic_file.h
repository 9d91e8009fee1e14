// Files written by trick appear complete or not at all: data goes to a temporary name in the
// same folder and is renamed over the target when complete. An interrupted or failed write
// leaves the previous file (if any) untouched and no temporary behind.
#pragma once
#include <cstdio>
#include <string>

namespace trick {

// Writes `bytes` to `path` atomically. Throws trick::Error naming the file on failure.
void atomic_write(const std::string& path, const std::string& bytes);

// For writers that stream: open(), write through file(), then commit(). Destroying an
// uncommitted AtomicFile removes the temporary.
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  FILE* file() const { return f_; }
  void write(const void* data, size_t bytes);
  void commit();  // flush, close, rename onto the target
  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_; }

 private:
  std::string path_, temp_;
  FILE* f_ = nullptr;
  bool committed_ = false;
};

// Creates a directory (and its parents) if missing; throws naming it if that fails or if it
// is not writable.
void ensure_directory(const std::string& dir);

// Fails now, naming the file, when `path` could not be written: it is a directory, or its
// folder is missing, not a folder or not writable. For commands to call before long work
// (a model load, a gradient, training), so such a mistake costs no wait; the write itself
// still reports whatever else goes wrong.
void check_output_file(const std::string& path);

// Temporaries of AtomicFiles still open; removed by remove_open_temporaries() (e.g. from a
// SIGINT handler path in the command) so an interrupted run leaves no stray files.
void remove_open_temporaries();

}  // namespace trick
