#include "models/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "tools/lib/atomic_file.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian; so is every host we build for");

namespace trick {

namespace {

// The reference implementation's limit: a header this large is an attack, not a model.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// A valid header nests three deep (object, tensor entry, shape array); anything far deeper is
// hostile input, refused before it costs memory.
constexpr int kMaxJsonDepth = 8;

// Element size of a safetensors dtype; 0 for a name we do not know.
size_t dtype_size(const std::string& d) {
  static const std::map<std::string, size_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2},
      {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4},     {"F64", 8},     {"I64", 8}, {"U64", 8}};
  auto it = sizes.find(d);
  return it == sizes.end() ? 0 : it->second;
}

std::string offsets_str(uint64_t b, uint64_t e) { return cat("[", b, ", ", e, "]"); }

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += cat(i ? ", " : "", s[i]);
  return out + "]";
}

// A JSON number that is a non-negative integer (not 3.0, not -1).
bool as_u64(const nlohmann::json& j, uint64_t* out) {
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
    return true;
  }
  if (j.is_number_integer() && j.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(j.get<int64_t>());
    return true;
  }
  return false;
}

}  // namespace

int64_t SafetensorsInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

bool SafetensorsInfo::is_float() const { return dtype == "F32" || dtype == "F16" || dtype == "BF16" || dtype == "F64"; }

struct SafetensorsFile::Mapping {
  void* addr = nullptr;  // open(): the file's private mapping
  size_t size = 0;
  std::string owned;  // from_bytes(): the bytes themselves
  ~Mapping() {
    if (addr) munmap(addr, size);
  }
};

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TRICK_CHECK(fd >= 0, path, ": cannot open: ", std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    parse(f, nullptr, size);  // fails: too short
  }
  // Private and writable: a caller that scales weights in place (batch-norm folding) gets
  // copy-on-write pages and the file on disk is never modified.
  void* addr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);
  TRICK_CHECK(addr != MAP_FAILED, path, ": cannot map ", size, " bytes: ", std::strerror(map_err));
  f.map_ = std::make_shared<Mapping>();
  f.map_->addr = addr;
  f.map_->size = size;
  parse(f, static_cast<const uint8_t*>(addr), size);
  return f;
}

SafetensorsFile SafetensorsFile::from_bytes(const std::string& name, std::string bytes) {
  SafetensorsFile f;
  f.path_ = name;
  f.map_ = std::make_shared<Mapping>();
  f.map_->owned = std::move(bytes);  // its heap block: aligned for any float, and it never moves again
  parse(f, reinterpret_cast<const uint8_t*>(f.map_->owned.data()), f.map_->owned.size());
  return f;
}

void SafetensorsFile::parse(SafetensorsFile& f, const uint8_t* bytes, uint64_t size) {
  const std::string& path = f.path_;
  if (size < 8) fail(path, ": file is ", size, " bytes, too short for a safetensors header (8-byte length, then JSON)");
  uint64_t n = 0;
  std::memcpy(&n, bytes, 8);
  // The most common wrong file: PyTorch's own format, a zip archive or a pickle stream.
  const bool plausible = n <= kMaxHeaderBytes && n <= size - 8 && size > 8 && bytes[8] == '{';
  if (!plausible &&
      (std::memcmp(bytes, "PK\x03\x04", 4) == 0 || (bytes[0] == 0x80 && bytes[1] >= 2 && bytes[1] <= 5)))
    fail(path, ": a PyTorch .pth file (", bytes[0] == 'P' ? "zip archive" : "pickle stream",
         "), not safetensors: convert it first with `trick convert ", path, " -o OUT.safetensors`");
  TRICK_CHECK(n <= kMaxHeaderBytes, path, ": header length ", n, " is over the 100 MB limit (not a safetensors file?)");
  TRICK_CHECK(n <= size - 8, path, ": header length ", n, " runs past the end of the file (", size, " bytes)");
  TRICK_CHECK(n >= 2 && bytes[8] == '{', path, ": header does not start with '{' (not a safetensors file?)");
  const uint64_t data_size = size - 8 - n;
  f.data_ = bytes + 8 + n;

  // Parse, refusing duplicate tensor names (a later entry would silently hide an earlier one)
  // and absurd nesting.
  nlohmann::json header;
  std::set<std::string> seen;
  std::string duplicate;
  try {
    header = nlohmann::json::parse(
        reinterpret_cast<const char*>(bytes + 8), reinterpret_cast<const char*>(bytes + 8 + n),
        [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
          if (depth > kMaxJsonDepth) fail(path, ": header JSON nests deeper than ", kMaxJsonDepth, " levels");
          if (event == nlohmann::json::parse_event_t::key && depth == 1 && parsed.is_string() &&
              !seen.insert(parsed.get<std::string>()).second && duplicate.empty())
            duplicate = parsed.get<std::string>();
          return true;
        });
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": header is not valid JSON: ", e.what());
  }
  TRICK_CHECK(duplicate.empty(), path, ": header names '", duplicate, "' twice");
  TRICK_CHECK(header.is_object(), path, ": header is not a JSON object");

  struct Span {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      TRICK_CHECK(v.is_object(), path, ": __metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        TRICK_CHECK(m.value().is_string(), path, ": __metadata__ entry '", m.key(), "' is not a string");
        f.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    TRICK_CHECK(v.is_object(), path, ": entry '", name, "' is not an object");
    SafetensorsInfo info;
    auto dt = v.find("dtype");
    TRICK_CHECK(dt != v.end() && dt->is_string(), path, ": tensor '", name, "' has no dtype string");
    info.dtype = dt->get<std::string>();
    const size_t esize = dtype_size(info.dtype);
    TRICK_CHECK(esize > 0, path, ": tensor '", name, "' has unknown dtype '", info.dtype, "'");

    auto sh = v.find("shape");
    TRICK_CHECK(sh != v.end() && sh->is_array(), path, ": tensor '", name, "' has no shape array");
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      uint64_t dim = 0;
      TRICK_CHECK(as_u64(d, &dim) && dim <= static_cast<uint64_t>(INT64_MAX), path, ": tensor '", name,
                  "' has a shape entry that is not a non-negative integer: ", d.dump());
      info.shape.push_back(static_cast<int64_t>(dim));
      TRICK_CHECK(!__builtin_mul_overflow(numel, dim, &numel) && numel <= static_cast<uint64_t>(INT64_MAX), path,
                  ": tensor '", name, "' has shape ", shape_str(info.shape), "... whose size overflows");
    }

    auto off = v.find("data_offsets");
    TRICK_CHECK(off != v.end() && off->is_array() && off->size() == 2 && as_u64((*off)[0], &info.begin) &&
                    as_u64((*off)[1], &info.end),
                path, ": tensor '", name, "' needs data_offsets [begin, end] of non-negative integers, got ",
                off == v.end() ? std::string("nothing") : off->dump());
    TRICK_CHECK(info.begin <= info.end, path, ": tensor '", name, "' has data_offsets ",
                offsets_str(info.begin, info.end), " with end before begin");
    TRICK_CHECK(info.end <= data_size, path, ": tensor '", name, "' has data_offsets ",
                offsets_str(info.begin, info.end), " past the end of the data (", data_size, " bytes)");
    uint64_t need = 0;
    TRICK_CHECK(!__builtin_mul_overflow(numel, static_cast<uint64_t>(esize), &need) && need == info.end - info.begin,
                path, ": tensor '", name, "' has data_offsets ", offsets_str(info.begin, info.end), " (",
                info.end - info.begin, " bytes) but ", info.dtype, " ", shape_str(info.shape), " needs ",
                numel, " x ", esize, " bytes");
    auto [slot, inserted] = f.info_.emplace(name, std::move(info));
    (void)inserted;
    spans.push_back({slot->second.begin, slot->second.end, &slot->first});
  }

  // The data section is the tensors back to back: each begins where the previous ended.
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  uint64_t expected = 0;
  const Span* prev = nullptr;
  for (const Span& s : spans) {
    if (s.begin < expected)
      fail(path, ": tensors '", *prev->name, "' ", offsets_str(prev->begin, prev->end), " and '", *s.name, "' ",
           offsets_str(s.begin, s.end), " overlap");
    if (s.begin > expected)
      fail(path, ": gap of ", s.begin - expected, " bytes in the data before tensor '", *s.name, "' ",
           offsets_str(s.begin, s.end));
    expected = s.end;
    prev = &s;
    f.names_.push_back(*s.name);
  }
  TRICK_CHECK(expected == data_size, path, ": ", data_size - expected, " bytes after the last tensor belong to none (data is ",
              data_size, " bytes, tensors end at ", expected, ")");
}

const SafetensorsInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = info_.find(name);
  TRICK_CHECK(it != info_.end(), path_, ": no tensor named '", name, "'");
  return it->second;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);  // rebias 15 -> 127
  } else if (mant == 0) {
    bits = sign;  // signed zero
  } else {
    // Subnormal half: normalise the mantissa into a float32 normal.
    exp = 113;
    while (!(mant & 0x400u)) {
      mant <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
  }
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

float bf16_to_f32(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

Tensor SafetensorsFile::read_f32(const std::string& name) const {
  const SafetensorsInfo& in = info(name);
  TRICK_CHECK(in.is_float(), path_, ": tensor '", name, "' has dtype ", in.dtype,
              "; only F32, F16, BF16 and F64 can be read as float32");
  TRICK_CHECK(in.shape.size() <= static_cast<size_t>(kMaxDims), path_, ": tensor '", name, "' has ", in.shape.size(),
              " dims ", shape_str(in.shape), "; at most ", kMaxDims, " are supported");
  const Shape shape = Shape::from(in.shape);
  const int64_t n = in.numel();
  const uint8_t* src = data_ + in.begin;
  if (in.dtype == "F32" && n > 0 && reinterpret_cast<uintptr_t>(src) % alignof(float) == 0)
    return Tensor::wrap(shape, reinterpret_cast<float*>(const_cast<uint8_t*>(src)), map_);
  Tensor t = Tensor::empty(shape);
  float* dst = t.data();
  if (in.dtype == "F32") {
    if (n) std::memcpy(dst, src, static_cast<size_t>(n) * 4);
  } else if (in.dtype == "F64") {
    for (int64_t i = 0; i < n; ++i) {
      double v;
      std::memcpy(&v, src + 8 * i, 8);
      dst[i] = static_cast<float>(v);
    }
  } else {
    const bool half = in.dtype == "F16";
    for (int64_t i = 0; i < n; ++i) {
      uint16_t v;
      std::memcpy(&v, src + 2 * i, 2);
      dst[i] = half ? f16_to_f32(v) : bf16_to_f32(v);
    }
  }
  return t;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    TRICK_CHECK(name != "__metadata__", path, ": a tensor cannot be named __metadata__");
    TRICK_CHECK(names.insert(name).second, path, ": tensor '", name, "' given twice");
    TRICK_CHECK(t.defined(), path, ": tensor '", name, "' is undefined");
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * sizeof(float);
    header[name] = {{"dtype", "F32"}, {"shape", t.shape().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": cannot write the header (a name or metadata value is not valid UTF-8?): ", e.what());
  }
  // Pad with spaces (valid JSON whitespace) so the data section starts 8-aligned, as the
  // reference writer does.
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t n = text.size();

  AtomicFile out(path);
  out.write(&n, 8);
  out.write(text.data(), text.size());
  for (const auto& [name, t] : tensors) {
    if (t.device().is_cpu() && t.is_contiguous()) {
      out.write(t.data(), static_cast<size_t>(t.numel()) * sizeof(float));
    } else {
      const std::vector<float> v = t.to_vector();
      out.write(v.data(), v.size() * sizeof(float));
    }
  }
  out.commit();
}

}  // namespace trick
