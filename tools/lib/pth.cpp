#include "tools/lib/pth.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>

#include "models/safetensors.h"
#include "tools/lib/pickle.h"

namespace trick {

namespace {

// ---- the file, mapped read-only ---------------------------------------------------------------

struct MappedFile {
  const uint8_t* p = nullptr;
  uint64_t n = 0;
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (p) munmap(const_cast<uint8_t*>(p), n);
  }
};

void map_file(const std::string& path, MappedFile* m) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TRICK_CHECK(fd >= 0, path, ": cannot open: ", std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  m->n = static_cast<uint64_t>(st.st_size);
  if (m->n == 0) {
    ::close(fd);
    fail(path, ": file is empty");
  }
  void* addr = mmap(nullptr, m->n, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);
  TRICK_CHECK(addr != MAP_FAILED, path, ": cannot map ", m->n, " bytes: ", std::strerror(err));
  m->p = static_cast<const uint8_t*>(addr);
}

uint64_t rd(const uint8_t* p, int bytes) {
  uint64_t u = 0;
  for (int k = 0; k < bytes; ++k) u |= static_cast<uint64_t>(p[k]) << (8 * k);
  return u;
}

// ---- what the pickle may name ---------------------------------------------------------------

struct StorageType {
  const char* global;
  const char* dtype;  // safetensors spelling
  size_t elsize;
  bool is_float;
};

const StorageType kStorageTypes[] = {
    {"torch.FloatStorage", "F32", 4, true},  {"torch.HalfStorage", "F16", 2, true},
    {"torch.BFloat16Storage", "BF16", 2, true}, {"torch.DoubleStorage", "F64", 8, true},
    {"torch.LongStorage", "I64", 8, false},  {"torch.IntStorage", "I32", 4, false},
    {"torch.ShortStorage", "I16", 2, false}, {"torch.CharStorage", "I8", 1, false},
    {"torch.ByteStorage", "U8", 1, false},   {"torch.BoolStorage", "BOOL", 1, false},
};

const char* const kRebuildTensor = "torch._utils._rebuild_tensor_v2";
const char* const kRebuildParameter = "torch._utils._rebuild_parameter";
const char* const kOrderedDict = "collections.OrderedDict";

const PickleOptions& state_dict_options() {
  static const PickleOptions opt = [] {
    PickleOptions o;
    o.allowed_globals = {kOrderedDict, kRebuildTensor, kRebuildParameter};
    for (const StorageType& t : kStorageTypes) o.allowed_globals.insert(t.global);
    o.dict_types = {kOrderedDict};
    return o;
  }();
  return opt;
}

// ---- from the pickle to tensor descriptions ------------------------------------------------------

struct StorageRef {
  std::string key;
  const StorageType* type = nullptr;
  int64_t numel = 0;        // elements in the whole storage, as the pickle declares
  int64_t view_offset = 0;  // legacy storage views: where the view starts (elements)
  int64_t view_numel = -1;  // and how long it is; -1: the whole storage
};

struct TensorSpec {
  std::string name;
  StorageRef storage;
  int64_t offset = 0;
  std::vector<int64_t> size, stride;
  int64_t numel = 1;
};

using Kind = PickleValue::Kind;

// 16 GiB of float32 per tensor: far above any model we load, and a stride-0 (expanded) view
// cannot make us allocate without bound.
constexpr int64_t kMaxElements = int64_t(1) << 32;

int64_t int_of(const PickleValue* v, const std::string& where, const char* what) {
  TRICK_CHECK(v->is(Kind::Int), where, ": ", what, " is ", describe(v), ", expected an int");
  return v->i;
}

std::vector<int64_t> ints_of(const PickleValue* v, const std::string& where, const char* what) {
  TRICK_CHECK(v->is(Kind::Tuple), where, ": ", what, " is ", describe(v), ", expected a tuple of ints");
  std::vector<int64_t> out;
  for (const PickleValue* x : v->items) {
    const int64_t i = int_of(x, where, what);
    TRICK_CHECK(i >= 0, where, ": ", what, " has a negative entry ", i);
    out.push_back(i);
  }
  return out;
}

// ('storage', torch.XStorage, key, location, numel[, view_metadata])
StorageRef storage_of(const PickleValue* arg, const std::string& where) {
  TRICK_CHECK(arg->is(Kind::PersistentId), where, ": storage argument is ", describe(arg), ", expected a persistent id");
  const PickleValue* pid = arg->items[0];
  TRICK_CHECK(pid->is(Kind::Tuple) && (pid->size() == 5 || pid->size() == 6), where, ": storage id is ", describe(pid),
              ", expected ('storage', type, key, location, numel[, view])");
  TRICK_CHECK((*pid)[0]->is(Kind::String) && (*pid)[0]->s == "storage", where, ": storage id starts with ",
              describe((*pid)[0]), ", expected 'storage'");
  StorageRef ref;
  const PickleValue* type = (*pid)[1];
  TRICK_CHECK(type->is(Kind::Global), where, ": storage type is ", describe(type));
  for (const StorageType& t : kStorageTypes)
    if (type->s == t.global) ref.type = &t;
  TRICK_CHECK(ref.type, where, ": unsupported storage type ", type->s);
  TRICK_CHECK((*pid)[2]->is(Kind::String), where, ": storage key is ", describe((*pid)[2]), ", expected a string");
  ref.key = (*pid)[2]->s;
  TRICK_CHECK((*pid)[3]->is(Kind::String), where, ": storage location is ", describe((*pid)[3]));
  ref.numel = int_of((*pid)[4], where, "storage size");
  TRICK_CHECK(ref.numel >= 0, where, ": storage '", ref.key, "' has negative size ", ref.numel);
  if (pid->size() == 6 && !(*pid)[5]->is(Kind::None)) {
    // Legacy storage view: (view_key, offset, size) in elements of the root storage.
    const PickleValue* view = (*pid)[5];
    TRICK_CHECK(view->is(Kind::Tuple) && view->size() == 3, where, ": storage view is ", describe(view));
    ref.view_offset = int_of((*view)[1], where, "storage view offset");
    ref.view_numel = int_of((*view)[2], where, "storage view size");
    TRICK_CHECK(ref.view_offset >= 0 && ref.view_numel >= 0 && ref.view_offset <= ref.numel &&
                    ref.view_numel <= ref.numel - ref.view_offset,
                where, ": storage view [", ref.view_offset, ", +", ref.view_numel, ") outside storage '", ref.key,
                "' of ", ref.numel, " elements");
  }
  return ref;
}

std::vector<TensorSpec> read_specs(const PickleValue* root, const std::string& path) {
  TRICK_CHECK(root->is(Kind::Dict), path, ": holds ", describe(root),
              ", expected a state dict (a dict of tensors; save model.state_dict(), not the model)");
  std::vector<TensorSpec> specs;
  std::set<std::string> names;
  for (size_t k = 0; k + 1 < root->size(); k += 2) {
    const PickleValue* key = (*root)[k];
    const PickleValue* value = (*root)[k + 1];
    TRICK_CHECK(key->is(Kind::String), path, ": state dict key ", k / 2, " is ", describe(key), ", expected a string");
    TensorSpec spec;
    spec.name = key->s;
    const std::string where = cat(path, ": tensor '", spec.name, "'");
    TRICK_CHECK(names.insert(spec.name).second, path, ": state dict names '", spec.name, "' twice");
    // nn.Parameter: _rebuild_parameter(tensor, requires_grad, hooks)
    if (value->is(Kind::Call) && (*value)[0]->s == kRebuildParameter) {
      const PickleValue* args = (*value)[1];
      TRICK_CHECK(args->size() >= 1, where, ": _rebuild_parameter without arguments");
      value = (*args)[0];
    }
    TRICK_CHECK(value->is(Kind::Call) && (*value)[0]->s == kRebuildTensor, where, ": value is ", describe(value),
                ", expected a tensor (", kRebuildTensor, ")");
    const PickleValue* args = (*value)[1];
    // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    TRICK_CHECK(args->size() >= 4, where, ": _rebuild_tensor_v2 with ", args->size(), " arguments, expected 6");
    spec.storage = storage_of((*args)[0], where);
    spec.offset = int_of((*args)[1], where, "storage offset");
    TRICK_CHECK(spec.offset >= 0, where, ": negative storage offset ", spec.offset);
    spec.size = ints_of((*args)[2], where, "size");
    spec.stride = ints_of((*args)[3], where, "stride");
    TRICK_CHECK(spec.size.size() == spec.stride.size(), where, ": size has ", spec.size.size(), " dims, stride ",
                spec.stride.size());
    // The last element the view touches must lie inside the storage.
    int64_t last = spec.offset;
    bool overflow = false;
    for (size_t d = 0; d < spec.size.size(); ++d) {
      int64_t span = 0;
      overflow |= __builtin_mul_overflow(spec.numel, spec.size[d], &spec.numel);
      if (spec.size[d] > 0) {
        overflow |= __builtin_mul_overflow(spec.size[d] - 1, spec.stride[d], &span);
        overflow |= __builtin_add_overflow(last, span, &last);
      }
    }
    TRICK_CHECK(!overflow, where, ": size and stride overflow");
    TRICK_CHECK(spec.numel <= kMaxElements, where, ": has ", spec.numel, " elements, more than the ", kMaxElements,
                " trick reads");
    const int64_t avail = spec.storage.view_numel >= 0 ? spec.storage.view_numel : spec.storage.numel;
    TRICK_CHECK(spec.numel == 0 || last < avail, where, ": view (offset ", spec.offset, ", size ",
                spec.size.size(), " dims, last element ", last, ") reaches past its storage '", spec.storage.key,
                "' of ", avail, " elements");
    specs.push_back(std::move(spec));
  }
  return specs;
}

// ---- from storages to float32 tensors ---------------------------------------------------------

// Where a storage's bytes are in the file.
struct StorageBytes {
  const uint8_t* data = nullptr;
  uint64_t bytes = 0;
};

float element(const uint8_t* p, const StorageType& t) {
  if (t.elsize == 4) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  if (t.elsize == 8) {
    double d;
    std::memcpy(&d, p, 8);
    return static_cast<float>(d);
  }
  uint16_t h;
  std::memcpy(&h, p, 2);
  return std::strcmp(t.dtype, "F16") == 0 ? f16_to_f32(h) : bf16_to_f32(h);
}

void convert(const std::vector<TensorSpec>& specs, const std::map<std::string, StorageBytes>& storages,
             const std::string& path, StateDictFile* out) {
  for (const TensorSpec& s : specs) {
    const std::string where = cat(path, ": tensor '", s.name, "'");
    auto it = storages.find(s.storage.key);
    TRICK_CHECK(it != storages.end(), where, ": its storage '", s.storage.key, "' is not in the file");
    const StorageType& t = *s.storage.type;
    TRICK_CHECK(static_cast<uint64_t>(s.storage.numel) <= it->second.bytes / t.elsize, where, ": storage '", s.storage.key, "' holds ", it->second.bytes,
                " bytes, shorter than the declared ", s.storage.numel, " elements of ", t.elsize, " bytes");
    if (!t.is_float) {
      out->ignored.push_back({s.name, t.dtype, s.size});
      continue;
    }
    TRICK_CHECK(s.size.size() <= static_cast<size_t>(kMaxDims), where, ": has ", s.size.size(), " dims; at most ",
                kMaxDims, " are supported");
    const uint8_t* base = it->second.data + static_cast<uint64_t>(s.storage.view_offset) * t.elsize;
    Tensor x = Tensor::empty(Shape::from(s.size));
    float* dst = x.data();
    // Walk the (up to 4-D) view in row-major order, padded in front with size-1 dims.
    int64_t size[4] = {1, 1, 1, 1}, stride[4] = {0, 0, 0, 0};
    const int pad = kMaxDims - static_cast<int>(s.size.size());
    for (size_t d = 0; d < s.size.size(); ++d) {
      size[pad + d] = s.size[d];
      stride[pad + d] = s.stride[d];
    }
    for (int64_t a = 0; a < size[0]; ++a)
      for (int64_t b = 0; b < size[1]; ++b)
        for (int64_t c = 0; c < size[2]; ++c) {
          const int64_t row = s.offset + a * stride[0] + b * stride[1] + c * stride[2];
          for (int64_t d = 0; d < size[3]; ++d)
            *dst++ = element(base + static_cast<uint64_t>(row + d * stride[3]) * t.elsize, t);
        }
    out->tensors.emplace_back(s.name, std::move(x));
  }
}

// ---- zip archives (PyTorch >= 1.6) ---------------------------------------------------------------

struct ZipEntry {
  uint64_t local_offset = 0, comp_size = 0, size = 0;
  uint32_t crc = 0;
  uint16_t method = 0, flags = 0;
};

class Zip {
 public:
  Zip(const uint8_t* p, uint64_t n, const std::string& path) : p_(p), n_(n), path_(path) { read_directory(); }

  const std::map<std::string, ZipEntry>& entries() const { return entries_; }

  // The bytes of a stored entry, checked against its CRC.
  StorageBytes data(const std::string& name) const {
    auto it = entries_.find(name);
    TRICK_CHECK(it != entries_.end(), path_, ": zip entry ", name, " is missing");
    const ZipEntry& e = it->second;
    TRICK_CHECK(!(e.flags & 1), path_, ": zip entry ", name, " is encrypted");
    TRICK_CHECK(e.method == 0, path_, ": zip entry ", name, " is compressed (method ", e.method,
                "); torch.save writes entries stored, re-save the file with torch.save");
    TRICK_CHECK(e.comp_size == e.size, path_, ": zip entry ", name, " is stored but its sizes differ (", e.comp_size,
                " vs ", e.size, ")");
    TRICK_CHECK(e.local_offset <= cd_offset_ && cd_offset_ - e.local_offset >= 30, path_, ": zip entry ", name,
                " has its local header at ", e.local_offset, ", outside the archive");
    const uint8_t* h = p_ + e.local_offset;
    TRICK_CHECK(rd(h, 4) == 0x04034b50, path_, ": zip entry ", name, " has no local header at byte ", e.local_offset);
    const uint64_t start = e.local_offset + 30 + rd(h + 26, 2) + rd(h + 28, 2);  // name and padding extra
    TRICK_CHECK(start <= cd_offset_ && e.size <= cd_offset_ - start, path_, ": zip entry ", name, " (", e.size,
                " bytes at byte ", start, ") runs past the end of the entries");
    TRICK_CHECK(rd(h + 26, 2) == name.size() && std::memcmp(h + 30, name.data(), name.size()) == 0, path_,
                ": zip entry ", name, " has a different name in its local header");
    uLong crc = crc32_z(0L, Z_NULL, 0);
    crc = crc32_z(crc, p_ + start, static_cast<size_t>(e.size));
    TRICK_CHECK(crc == e.crc, path_, ": zip entry ", name, " is corrupt (CRC mismatch)");
    return {p_ + start, e.size};
  }

 private:
  const uint8_t* p_;
  uint64_t n_;
  const std::string& path_;
  uint64_t cd_offset_ = 0;
  std::map<std::string, ZipEntry> entries_;

  void read_directory() {
    TRICK_CHECK(n_ >= 22, path_, ": ", n_, " bytes is too short for a zip archive (truncated?)");
    // End of central directory: 22 bytes plus a comment of up to 64 KiB at the very end.
    uint64_t eocd = UINT64_MAX;
    const uint64_t lowest = n_ - 22 > 65535 ? n_ - 22 - 65535 : 0;
    for (uint64_t i = n_ - 22 + 1; i-- > lowest;)
      if (rd(p_ + i, 4) == 0x06054b50 && i + 22 + rd(p_ + i + 20, 2) == n_) {
        eocd = i;
        break;
      }
    TRICK_CHECK(eocd != UINT64_MAX, path_, ": no zip end-of-central-directory record (truncated or not a zip archive)");
    const uint8_t* e = p_ + eocd;
    uint64_t entries = rd(e + 10, 2), cd_size = rd(e + 12, 4), cd_offset = rd(e + 16, 4);
    uint64_t cd_limit = eocd;
    TRICK_CHECK(rd(e + 4, 2) == 0 && rd(e + 6, 2) == 0, path_, ": multi-disk zip archives are not supported");
    // Zip64 (PyTorch always writes it): a locator right before the record points to the
    // 64-bit end-of-central-directory record, whose counts and offsets take precedence.
    if (eocd >= 20 && rd(p_ + eocd - 20, 4) == 0x07064b50) {
      const uint64_t z = rd(p_ + eocd - 20 + 8, 8);
      TRICK_CHECK(z <= eocd - 20 && eocd - 20 - z >= 56 && rd(p_ + z, 4) == 0x06064b50, path_,
                  ": zip64 end-of-central-directory record missing or outside the file");
      TRICK_CHECK(rd(p_ + z + 16, 4) == 0 && rd(p_ + z + 20, 4) == 0, path_, ": multi-disk zip archives are not supported");
      entries = rd(p_ + z + 32, 8);
      cd_size = rd(p_ + z + 40, 8);
      cd_offset = rd(p_ + z + 48, 8);
      cd_limit = z;
    } else {
      TRICK_CHECK(entries != 0xFFFF && cd_size != 0xFFFFFFFF && cd_offset != 0xFFFFFFFF, path_,
                  ": zip record needs zip64 data but has no zip64 locator");
    }
    TRICK_CHECK(cd_offset <= cd_limit && cd_size <= cd_limit - cd_offset, path_, ": zip central directory [", cd_offset,
                ", +", cd_size, ") lies outside the archive (truncated?)");
    TRICK_CHECK(entries <= cd_size / 46, path_, ": zip directory claims ", entries, " entries in ", cd_size, " bytes");
    cd_offset_ = cd_offset;
    const uint64_t end = cd_offset + cd_size;
    uint64_t pos = cd_offset;
    for (uint64_t k = 0; k < entries; ++k) {
      TRICK_CHECK(end - pos >= 46 && rd(p_ + pos, 4) == 0x02014b50, path_, ": zip central directory entry ", k,
                  " is corrupt");
      const uint8_t* c = p_ + pos;
      ZipEntry z;
      z.flags = static_cast<uint16_t>(rd(c + 8, 2));
      z.method = static_cast<uint16_t>(rd(c + 10, 2));
      z.crc = static_cast<uint32_t>(rd(c + 16, 4));
      z.comp_size = rd(c + 20, 4);
      z.size = rd(c + 24, 4);
      const uint64_t name_len = rd(c + 28, 2), extra_len = rd(c + 30, 2), comment_len = rd(c + 32, 2);
      z.local_offset = rd(c + 42, 4);
      TRICK_CHECK(end - pos - 46 >= name_len + extra_len + comment_len, path_, ": zip central directory entry ", k,
                  " runs past the directory");
      const std::string name(reinterpret_cast<const char*>(c + 46), name_len);
      // Zip64 extra field: the 64-bit values of the fields saturated at 0xFFFFFFFF, in order.
      const uint8_t* x = c + 46 + name_len;
      for (uint64_t q = 0; q + 4 <= extra_len;) {
        const uint64_t id = rd(x + q, 2), len = rd(x + q + 2, 2);
        TRICK_CHECK(q + 4 + len <= extra_len, path_, ": zip entry ", name, " has a corrupt extra field");
        if (id == 0x0001) {
          uint64_t f = q + 4;
          auto take = [&](uint64_t* v) {
            TRICK_CHECK(f + 8 <= q + 4 + len, path_, ": zip entry ", name, " has a short zip64 field");
            *v = rd(x + f, 8);
            f += 8;
          };
          if (z.size == 0xFFFFFFFF) take(&z.size);
          if (z.comp_size == 0xFFFFFFFF) take(&z.comp_size);
          if (z.local_offset == 0xFFFFFFFF) take(&z.local_offset);
        }
        q += 4 + len;
      }
      TRICK_CHECK(entries_.emplace(name, z).second, path_, ": zip archive has two entries named ", name);
      pos += 46 + name_len + extra_len + comment_len;
    }
  }
};

void load_zip(const MappedFile& m, const std::string& path, StateDictFile* out) {
  Zip zip(m.p, m.n, path);
  // Entries live under one top-level folder named after the file ("model/data.pkl";
  // "archive/data.pkl" in newer PyTorch).
  std::string prefix;
  for (const auto& [name, e] : zip.entries()) {
    const size_t slash = name.find('/');
    if (slash != std::string::npos && name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      TRICK_CHECK(prefix.empty(), path, ": zip archive holds two pickles (", prefix, "/data.pkl and ", name, ")");
      prefix = name.substr(0, slash);
    }
  }
  TRICK_CHECK(!prefix.empty(), path, ": zip archive has no <folder>/data.pkl entry: not a torch.save file");
  if (zip.entries().count(prefix + "/byteorder")) {
    const StorageBytes b = zip.data(prefix + "/byteorder");
    const std::string order(reinterpret_cast<const char*>(b.data), b.bytes);
    TRICK_CHECK(order == "little", path, ": storages are ", order, "-endian; only little-endian files are supported");
  }
  const std::string pkl = prefix + "/data.pkl";
  const StorageBytes p = zip.data(pkl);
  const Pickle pk = parse_pickle(p.data, p.bytes, cat(path, ": ", pkl), state_dict_options());
  TRICK_CHECK(pk.end == p.bytes, path, ": ", pkl, " has ", p.bytes - pk.end, " bytes after its STOP opcode");
  const std::vector<TensorSpec> specs = read_specs(pk.root, path);
  std::map<std::string, StorageBytes> storages;
  for (const TensorSpec& s : specs)
    if (!storages.count(s.storage.key)) {
      const std::string entry = prefix + "/data/" + s.storage.key;
      TRICK_CHECK(zip.entries().count(entry), path, ": tensor '", s.name, "': its storage ", entry, " is missing");
      storages[s.storage.key] = zip.data(entry);
    }
  out->format = "zip";
  convert(specs, storages, path, out);
}

// ---- legacy pickle stream (PyTorch < 1.6, or _use_new_zipfile_serialization=False) -------------

void load_legacy(const MappedFile& m, const std::string& path, StateDictFile* out) {
  uint64_t pos = 0;
  const PickleOptions plain;
  auto next = [&](const PickleOptions& opt) {
    Pickle pk = parse_pickle(m.p + pos, m.n - pos, path, opt, pos);
    pos += pk.end;
    return pk;
  };
  // 0x1950a86a20f9469cfc6c, as LONG1 writes it: little-endian two's complement.
  static const std::string kMagic("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10);
  const Pickle magic = next(plain);
  TRICK_CHECK(magic.root->is(Kind::BigInt) && magic.root->s == kMagic, path,
              ": starts with a pickle but not torch.save's magic number (", describe(magic.root), ")");
  const Pickle version = next(plain);
  TRICK_CHECK(version.root->is(Kind::Int) && version.root->i == 1001, path, ": legacy format version ",
              describe(version.root), ", expected 1001");
  const Pickle sys_info = next(plain);
  TRICK_CHECK(sys_info.root->is(Kind::Dict), path, ": legacy sys-info is ", describe(sys_info.root), ", expected a dict");
  for (size_t k = 0; k + 1 < sys_info.root->size(); k += 2) {
    const PickleValue* key = (*sys_info.root)[k];
    const PickleValue* value = (*sys_info.root)[k + 1];
    if (key->is(Kind::String) && key->s == "little_endian")
      TRICK_CHECK(value->is(Kind::Bool) && value->i == 1, path, ": saved on a big-endian machine; not supported");
  }
  const Pickle object = next(state_dict_options());
  const Pickle keys = next(plain);
  TRICK_CHECK(keys.root->is(Kind::List), path, ": legacy storage key list is ", describe(keys.root));
  const std::vector<TensorSpec> specs = read_specs(object.root, path);

  // What each key's element size and declared length are, from the tensors that use it.
  std::map<std::string, const StorageRef*> refs;
  for (const TensorSpec& s : specs) {
    auto [it, inserted] = refs.emplace(s.storage.key, &s.storage);
    TRICK_CHECK(inserted || (it->second->type == s.storage.type && it->second->numel == s.storage.numel), path,
                ": storage '", s.storage.key, "' is declared with two types or sizes");
  }
  // Then, for each key in order: an int64 element count and the raw bytes.
  std::map<std::string, StorageBytes> storages;
  for (const PickleValue* key : keys.root->items) {
    TRICK_CHECK(key->is(Kind::String), path, ": legacy storage key is ", describe(key), ", expected a string");
    auto ref = refs.find(key->s);
    TRICK_CHECK(ref != refs.end(), path, ": storage '", key->s, "' is stored but no tensor uses it");
    TRICK_CHECK(!storages.count(key->s), path, ": storage '", key->s, "' is stored twice");
    TRICK_CHECK(m.n - pos >= 8, path, ": truncated: storage '", key->s, "' should start at byte ", pos, " but the file is ",
                m.n, " bytes");
    uint64_t count = rd(m.p + pos, 8);
    TRICK_CHECK(count == static_cast<uint64_t>(ref->second->numel), path, ": storage '", key->s, "' holds ", count,
                " elements, the pickle declares ", ref->second->numel);
    pos += 8;
    const uint64_t elsize = ref->second->type->elsize;
    TRICK_CHECK(count <= (m.n - pos) / elsize, path, ": truncated: storage '", key->s, "' needs ", count, " x ", elsize,
                " bytes at byte ", pos, ", the file has ", m.n - pos, " left");
    const uint64_t bytes = count * elsize;
    storages[key->s] = {m.p + pos, bytes};
    pos += bytes;
  }
  out->format = "legacy";
  convert(specs, storages, path, out);
}

}  // namespace

WeightFormat detect_weight_format(const std::string& path) {
  struct stat st;
  // fopen succeeds on a directory and the read then fails: say what it is, not "empty".
  TRICK_CHECK(::stat(path.c_str(), &st) != 0 || S_ISREG(st.st_mode), path,
              S_ISDIR(st.st_mode) ? ": is a directory, not a weight file" : ": not a regular file");
  FILE* f = std::fopen(path.c_str(), "rb");
  TRICK_CHECK(f, path, ": cannot open: ", std::strerror(errno));
  uint8_t h[9] = {0};
  const size_t got = std::fread(h, 1, sizeof h, f);
  std::fclose(f);
  TRICK_CHECK(got > 0, path, ": file is empty");
  if (got >= 4 && h[0] == 'P' && h[1] == 'K' && h[2] == 3 && h[3] == 4) return WeightFormat::PthZip;
  // safetensors first: a header length whose low byte is 0x80 would look like a pickle.
  if (got == 9 && h[8] == '{' && rd(h, 8) >= 2) return WeightFormat::Safetensors;
  if (got >= 2 && h[0] == 0x80 && h[1] >= 2 && h[1] <= 5) return WeightFormat::PthLegacy;
  return WeightFormat::Unknown;
}

StateDictFile load_pth(const std::string& path) {
  MappedFile m;
  map_file(path, &m);
  StateDictFile out;
  out.path = path;
  if (m.n >= 4 && std::memcmp(m.p, "PK\x03\x04", 4) == 0) {
    load_zip(m, path, &out);
  } else if (m.n >= 2 && m.p[0] == 0x80) {
    load_legacy(m, path, &out);
  } else {
    fail(path, ": not a PyTorch .pth file (neither a zip archive nor a pickle stream)");
  }
  return out;
}

}  // namespace trick
