// Weight formats: safetensors round trip and every malformed-file case the reader must
// refuse, the pickle VM's refusals, and hand-assembled legacy .pth streams. Files are built
// byte by byte here, so what is tested is the format, not our writer agreeing with our reader.
// (tests/formats_check.py compares whole .pth files written by PyTorch.)
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/safetensors.h"
#include "tensor/random.h"
#include "tools/lib/pickle.h"
#include "tools/lib/pth.h"
#include "tools/lib/sha256.h"

#include "tests/test_util.h"

namespace test_formats {

using namespace trick;
using namespace trick_test;

namespace {


std::string u64le(uint64_t v) {
  std::string s(8, '\0');
  for (int k = 0; k < 8; ++k) s[k] = static_cast<char>((v >> (8 * k)) & 0xff);
  return s;
}

std::string u32le(uint32_t v) { return u64le(v).substr(0, 4); }

template <typename T>
std::string raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// A safetensors file from a header text and a data section, exactly as given.
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  return u64le(header.size()) + header + data;
}

// Runs `f`, which must throw trick::Error whose message contains every one of `parts`.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  std::string msg;
  try {
    f();
  } catch (const Error& e) {
    msg = e.what();
  }
  INFO("message: ", msg);
  REQUIRE_MESSAGE(!msg.empty(), "no trick::Error thrown");
  for (const std::string& p : parts) CHECK_MESSAGE(msg.find(p) != std::string::npos, "missing '", p, "'");
}

// Opening a safetensors file with these contents fails naming the file and the problem, and
// so does reading the same bytes from memory (naming the name it was given).
void expect_bad_safetensors(const std::string& contents, const std::vector<std::string>& problem) {
  TempDir dir;
  const std::string path = dir.file("weights.safetensors");
  write_bytes(path, contents);
  std::vector<std::string> parts = problem;
  parts.insert(parts.begin(), path + ": ");
  expect_error([&] { SafetensorsFile::open(path); }, parts);
  parts[0] = "in-memory weights: ";
  expect_error([&] { SafetensorsFile::from_bytes("in-memory weights", contents); }, parts);
}

}  // namespace

// ---- safetensors --------------------------------------------------------------------------------

TEST_CASE("formats: safetensors round trip") {
  TempDir dir;
  Rng rng(42);
  const Tensor conv = randn(Shape{5, 3, 3, 2}, rng);
  const Tensor vec = randn(Shape{7}, rng);
  const Tensor scalar = Tensor::from_vector(Shape{}, {-1.25f});
  const Tensor empty = Tensor::empty(Shape{0, 3});
  const Tensor wide = randn(Shape{4, 9}, rng);
  const Tensor view = wide.slice_last(2, 7);  // (4, 5), row stride 9: written row-major
  const std::vector<std::pair<std::string, Tensor>> tensors = {
      {"conv.weight", conv}, {"fc.bias", vec}, {"scalar", scalar}, {"empty", empty}, {"view", view}};
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"model", "test net"}, {"note", "ünïcödé"}};
  const std::string path = dir.file("round.safetensors");
  write_safetensors(path, tensors, meta);

  // The bytes on disk, read without our reader: header padded to 8, data back to back.
  const std::string bytes = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
  const auto header = nlohmann::json::parse(bytes.substr(8, n));
  CHECK(header["__metadata__"]["model"] == "test net");
  uint64_t expected_offset = 0;
  for (const auto& [name, t] : tensors) {
    const auto& e = header[name];
    CHECK(e["dtype"] == "F32");
    CHECK(e["shape"].get<std::vector<int64_t>>() == t.shape().vec());
    CHECK(e["data_offsets"][0].get<uint64_t>() == expected_offset);
    expected_offset += 4 * static_cast<uint64_t>(t.numel());
    std::vector<float> on_disk(static_cast<size_t>(t.numel()));
    if (!on_disk.empty())
      std::memcpy(on_disk.data(), bytes.data() + 8 + n + e["data_offsets"][0].get<uint64_t>(), on_disk.size() * 4);
    CHECK(on_disk == t.to_vector());
  }
  CHECK(bytes.size() == 8 + n + expected_offset);

  Tensor conv_back;
  {
    const SafetensorsFile f = SafetensorsFile::open(path);
    CHECK(f.names() == std::vector<std::string>{"conv.weight", "fc.bias", "scalar", "empty", "view"});
    CHECK(f.metadata() == meta);
    for (const auto& [name, t] : tensors) {
      CAPTURE(name);
      CHECK(f.info(name).dtype == "F32");
      CHECK(f.info(name).shape == t.shape().vec());
      const Tensor back = f.read_f32(name);
      CHECK(back.shape() == t.shape());
      CHECK(back.to_vector() == t.to_vector());  // exact
    }
    conv_back = f.read_f32("conv.weight");
    CHECK(conv_back.owner() != nullptr);  // zero-copy: wraps the mapping
    expect_error([&] { f.info("missing"); }, {path, "no tensor named 'missing'"});
  }
  // The mapping outlives the file object while a tensor uses it.
  CHECK(conv_back.to_vector() == conv.to_vector());
  // Writing into a wrapped tensor is copy-on-write: the file does not change.
  conv_back.data()[0] = 1234.5f;
  CHECK(read_bytes(path) == bytes);

  // The same bytes from memory (the embedded model's way): the same tables and values, and
  // the tensors keep the reader's copy alive after it is gone.
  Tensor from_memory;
  {
    const SafetensorsFile f = SafetensorsFile::from_bytes("copy of round.safetensors", bytes);
    CHECK(f.path() == "copy of round.safetensors");
    CHECK(f.names() == std::vector<std::string>{"conv.weight", "fc.bias", "scalar", "empty", "view"});
    CHECK(f.metadata() == meta);
    for (const auto& [name, t] : tensors) {
      CAPTURE(name);
      CHECK(f.info(name).shape == t.shape().vec());
      CHECK(f.read_f32(name).to_vector() == t.to_vector());
    }
    from_memory = f.read_f32("conv.weight");
    CHECK(from_memory.owner() != nullptr);  // zero-copy: wraps the reader's bytes
    expect_error([&] { f.info("missing"); }, {"copy of round.safetensors: no tensor named 'missing'"});
  }
  CHECK(from_memory.to_vector() == conv.to_vector());

  expect_error([&] { write_safetensors(dir.file("dup.safetensors"), {{"a", vec}, {"a", vec}}); },
               {"dup.safetensors", "'a' given twice"});
  CHECK(!std::filesystem::exists(dir.file("dup.safetensors")));
}

TEST_CASE("formats: safetensors F16, BF16, F64 and unaligned F32 are converted") {
  TempDir dir;
  // Bit patterns with known values: 1, -2, the smallest half subnormal 2^-24, the largest
  // half 65504, +inf; bfloat16 1 and -0.15625; doubles 1/3 and -1e-40 (a float subnormal).
  const std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x0001, 0x7BFF, 0x7C00};
  const std::vector<uint16_t> bf16 = {0x3F80, 0xBE20};
  const std::vector<double> f64 = {1.0 / 3.0, -1e-40};
  const std::vector<float> f32 = {0.5f, -7.0f, 3.0e-5f};
  // "h" (10 bytes) first, so "u" starts at data offset 10: not 4-byte aligned.
  const std::string data = raw(f16) + raw(f32) + raw(bf16) + std::string(2, '\0') + raw(f64);
  const std::string header =
      R"({"h":{"dtype":"F16","shape":[5],"data_offsets":[0,10]},)"
      R"("u":{"dtype":"F32","shape":[3],"data_offsets":[10,22]},)"
      R"("b":{"dtype":"BF16","shape":[1,2],"data_offsets":[22,26]},)"
      R"("pad":{"dtype":"U8","shape":[2],"data_offsets":[26,28]},)"
      R"("d":{"dtype":"F64","shape":[2],"data_offsets":[28,44]}})";
  const std::string path = dir.file("mixed.safetensors");
  write_bytes(path, safetensors_bytes(header, data));
  const SafetensorsFile f = SafetensorsFile::open(path);
  CHECK(f.read_f32("h").to_vector() ==
        std::vector<float>{1.f, -2.f, std::ldexp(1.f, -24), 65504.f, std::numeric_limits<float>::infinity()});
  const Tensor u = f.read_f32("u");
  CHECK(u.owner() == nullptr);  // unaligned: copied, not wrapped
  CHECK(u.to_vector() == f32);
  CHECK(f.read_f32("b").shape() == Shape{1, 2});
  CHECK(f.read_f32("b").to_vector() == std::vector<float>{1.f, -0.15625f});
  CHECK(f.read_f32("d").to_vector() == std::vector<float>{static_cast<float>(1.0 / 3.0), static_cast<float>(-1e-40)});
  CHECK(f.info("pad").dtype == "U8");
  expect_error([&] { f.read_f32("pad"); }, {path, "tensor 'pad' has dtype U8"});
}

TEST_CASE("formats: safetensors header length past the end of the file") {
  expect_bad_safetensors(u64le(1000) + R"({"a":1})", {"header length 1000 runs past the end of the file (15 bytes)"});
}

TEST_CASE("formats: safetensors header length huge") {
  expect_bad_safetensors(u64le(uint64_t(1) << 40) + std::string(64, ' '), {"header length 1099511627776", "100 MB"});
}

TEST_CASE("formats: safetensors header is invalid JSON") {
  expect_bad_safetensors(safetensors_bytes(R"({"a": {"dtype": "F32", "shape": [2)", ""), {"not valid JSON"});
}

TEST_CASE("formats: safetensors header is not an object of objects") {
  expect_bad_safetensors(safetensors_bytes(R"({"a": [1, 2]})", ""), {"entry 'a' is not an object"});
  expect_bad_safetensors(safetensors_bytes(R"({"__metadata__": {"k": 5}})", ""),
                         {"__metadata__ entry 'k' is not a string"});
  expect_bad_safetensors(
      safetensors_bytes(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", ""),
      {"tensor 'a'", "not a non-negative integer: -1"});
  expect_bad_safetensors(
      safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                        std::string(8, '\0')),
      {"names 'a' twice"});
  expect_bad_safetensors(safetensors_bytes(std::string(200, '[') + std::string(200, ']'), ""),
                         {"does not start with '{'"});
}

TEST_CASE("formats: safetensors offsets out of the file") {
  expect_bad_safetensors(
      safetensors_bytes(R"({"fc.weight":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, '\0')),
      {"tensor 'fc.weight' has data_offsets [0, 16] past the end of the data (8 bytes)"});
}

TEST_CASE("formats: safetensors overlapping offsets") {
  expect_bad_safetensors(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                                           R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
                                           std::string(24, '\0')),
                         {"tensors 'a' [0, 16] and 'b' [8, 24] overlap"});
}

TEST_CASE("formats: safetensors gaps in the data") {
  expect_bad_safetensors(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})",
                                           std::string(24, '\0')),
                         {"gap of 8 bytes in the data before tensor 'b' [16, 24]"});
  expect_bad_safetensors(
      safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(12, '\0')),
      {"4 bytes after the last tensor belong to none"});
}

TEST_CASE("formats: safetensors byte size does not match the shape") {
  expect_bad_safetensors(
      safetensors_bytes(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')),
      {"tensor 'w' has data_offsets [0, 8] (8 bytes) but F32 [3] needs 3 x 4 bytes"});
  expect_bad_safetensors(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],)"
                                           R"("data_offsets":[0,8]}})",
                                           std::string(8, '\0')),
                         {"tensor 'w'", "overflows"});
}

TEST_CASE("formats: safetensors unknown dtype") {
  expect_bad_safetensors(
      safetensors_bytes(R"({"q":{"dtype":"Q7","shape":[2],"data_offsets":[0,2]}})", std::string(2, '\0')),
      {"tensor 'q' has unknown dtype 'Q7'"});
}

TEST_CASE("formats: safetensors I64 and 5-D tensors are listed but not read as float32") {
  TempDir dir;
  const std::string path = dir.file("ints.safetensors");
  write_bytes(path, safetensors_bytes(R"({"steps":{"dtype":"I64","shape":[],"data_offsets":[0,8]},)"
                                      R"("five":{"dtype":"F32","shape":[1,1,1,1,2],"data_offsets":[8,16]}})",
                                      std::string(16, '\0')));
  const SafetensorsFile f = SafetensorsFile::open(path);
  CHECK(f.names() == std::vector<std::string>{"steps", "five"});
  CHECK(!f.info("steps").is_float());
  expect_error([&] { f.read_f32("steps"); }, {path, "tensor 'steps' has dtype I64"});
  expect_error([&] { f.read_f32("five"); }, {path, "tensor 'five' has 5 dims"});
}

TEST_CASE("formats: safetensors zero-byte file") {
  expect_bad_safetensors("", {"file is 0 bytes, too short"});
}

TEST_CASE("formats: safetensors random bytes") {
  Rng rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    std::string bytes(static_cast<size_t>(1 + rng.below(4096)), '\0');
    for (char& c : bytes) c = static_cast<char>(rng.below(256));
    if (trial % 2) bytes.replace(0, std::min<size_t>(8, bytes.size()), u64le(bytes.size() / 2).substr(0, std::min<size_t>(8, bytes.size())));
    CAPTURE(trial);
    expect_bad_safetensors(bytes, {});
  }
}

// ---- the pickle VM ------------------------------------------------------------------------------

namespace {

PickleOptions torch_options() {
  PickleOptions o;
  o.allowed_globals = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch.FloatStorage"};
  o.dict_types = {"collections.OrderedDict"};
  return o;
}

Pickle parse(const std::string& bytes, const PickleOptions& o = torch_options()) {
  return parse_pickle(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "test.pkl", o);
}

// Opcode helpers for assembling pickles by hand.
std::string op_str(const std::string& s) { return "X" + u32le(static_cast<uint32_t>(s.size())) + s; }
std::string op_int(int32_t i) { return "J" + u32le(static_cast<uint32_t>(i)); }
std::string op_ints(const std::vector<int32_t>& v) {
  std::string s = "(";
  for (int32_t i : v) s += op_int(i);
  return s + "t";
}
const std::string kProto = "\x80\x02";
const std::string kOrderedDict = "ccollections\nOrderedDict\n)R";

// _rebuild_tensor_v2(('storage', <storage type>, key, 'cpu', numel[, None]), offset, size,
// stride, False, OrderedDict()) the way torch.save pickles it.
std::string op_tensor(const std::string& type, const std::string& key, int32_t numel, int32_t offset,
                      const std::vector<int32_t>& size, const std::vector<int32_t>& stride, bool legacy) {
  return "ctorch._utils\n_rebuild_tensor_v2\n((" + op_str("storage") + "ctorch\n" + type + "\n" + op_str(key) +
         op_str("cpu") + op_int(numel) + (legacy ? "N" : "") + "tQ" + op_int(offset) + op_ints(size) +
         op_ints(stride) + "\x89" + kOrderedDict + "tR";
}

}  // namespace

TEST_CASE("formats: pickle VM reads a state-dict pickle without executing it") {
  const std::string bytes = kProto + kOrderedDict + std::string("q\x00(", 3) + op_str("w") +
                            op_tensor("FloatStorage", "0", 6, 0, {2, 3}, {3, 1}, false) + op_str("me") +
                            std::string("h\x00u", 3) + std::string("\x8a\x02\x00\x80", 4) +
                            "b.";  // BUILD with LONG1 -32768 as the state
  const Pickle p = parse(bytes);
  CHECK(p.end == bytes.size());
  const PickleValue* root = p.root;
  REQUIRE(root->is(PickleValue::Kind::Dict));
  REQUIRE(root->size() == 4);  // "w" -> tensor, then the dict memoised into itself
  CHECK((*root)[0]->s == "w");
  const PickleValue* call = (*root)[1];
  REQUIRE(call->is(PickleValue::Kind::Call));
  CHECK((*call)[0]->s == "torch._utils._rebuild_tensor_v2");
  const PickleValue* args = (*call)[1];
  REQUIRE(args->size() == 6);
  REQUIRE((*args)[0]->is(PickleValue::Kind::PersistentId));
  CHECK((*(*args)[0])[0]->size() == 5);
  CHECK((*root)[3] == root);  // a cycle through the memo is harmless
  REQUIRE(root->state);
  CHECK(root->state->i == -32768);
}

TEST_CASE("formats: pickle VM rejects unsupported opcodes") {
  expect_error([] { parse(kProto + "G" + std::string(8, '\0') + "."); },
               {"test.pkl: unsupported pickle opcode BINFLOAT (0x47) at byte 2"});
  expect_error([] { parse(kProto + "\x93."); }, {"unsupported pickle opcode STACK_GLOBAL (0x93) at byte 2"});
  expect_error([] { parse(kProto + "N\xff."); }, {"unknown pickle opcode 0xff", "at byte 3"});
  expect_error([] { parse(kProto + "a."); }, {"stack underflow at byte 2 (APPEND)"});
  expect_error([] { parse(kProto + "h\x05."); }, {"memo slot 5 read before it was written at byte 2"});
  expect_error([] { parse(kProto + "NN."); }, {"STOP with 2 values on the stack"});
}

TEST_CASE("formats: pickle VM rejects disallowed globals") {
  expect_error([] { parse(kProto + "cos\nsystem\n(" + op_str("echo hi") + "tR."); },
               {"test.pkl: disallowed global 'os.system'", "at byte 2 (GLOBAL)"});
  expect_error([] { parse(kProto + "cbuiltins\neval\n."); }, {"disallowed global 'builtins.eval'"});
  // REDUCE of anything that is not an allowed global is refused too.
  expect_error([] { parse(kProto + op_str("x") + ")R."); }, {"REDUCE of string 'x'"});
}

TEST_CASE("formats: pickle VM rejects truncated streams") {
  const std::string good = kProto + kOrderedDict + "(" + op_str("name") + op_int(5) + "u.";
  CHECK_NOTHROW(parse(good));
  for (size_t cut = 0; cut < good.size(); ++cut) {
    CAPTURE(cut);
    expect_error([&] { parse(good.substr(0, cut)); }, {"test.pkl: pickle truncated"});
  }
}

TEST_CASE("formats: pickle VM rejects deep nesting") {
  // [[[[...]]]] 200 deep: lists pushed, then appended into one another.
  expect_error([] { parse(kProto + std::string(200, ']') + std::string(199, 'a') + "."); },
               {"test.pkl: values nested deeper than 100 levels"});
  // ((((...)))) via MARK/TUPLE.
  expect_error([] { parse(kProto + std::string(5000, '(') + std::string(5000, 't') + "."); },
               {"nested deeper than 100"});
  PickleOptions shallow = torch_options();
  shallow.max_depth = 3;
  expect_error([&] { parse(kProto + ")\x85\x85\x85\x85.", shallow); }, {"nested deeper than 3"});
  CHECK_NOTHROW(parse(kProto + ")\x85\x85\x85.", shallow));
}

// ---- legacy .pth streams, assembled by hand ----------------------------------------------------------

namespace {

struct LegacyStorage {
  std::string key;
  int64_t count;       // element count written before the data
  std::string bytes;   // the data
};

// magic, protocol 1001, sys info, the state dict, the key list, then each storage.
std::string legacy_pth(const std::string& entries, const std::vector<LegacyStorage>& storages) {
  std::string s = kProto + "\x8a\x0a" + std::string("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10) + ".";
  s += kProto + "M\xe9\x03.";
  s += kProto + "}(" + op_str("little_endian") + "\x88u.";
  s += kProto + kOrderedDict + "(" + entries + "u.";
  s += kProto + "](";
  for (const auto& st : storages) s += op_str(st.key);
  s += "e.";
  for (const auto& st : storages) s += u64le(static_cast<uint64_t>(st.count)) + st.bytes;
  return s;
}

StateDictFile load_bytes(const TempDir& dir, const std::string& bytes) {
  const std::string path = dir.file("model.pth");
  write_bytes(path, bytes);
  return load_pth(path);
}

}  // namespace

TEST_CASE("formats: legacy pth with strides, offsets, half and int64") {
  TempDir dir;
  const std::vector<float> data = {0, 1, 2, 3, 4, 5, 6, 7};
  const std::vector<uint16_t> half = {0x3C00, 0xBC00, 0x3800};  // 1, -1, 0.5
  const std::string entries =
      op_str("t") + op_tensor("FloatStorage", "a", 8, 1, {3, 2}, {1, 3}, true) +  // offset 1, transposed
      op_str("h") + op_tensor("HalfStorage", "b", 3, 0, {3}, {1}, true) +
      op_str("steps") + op_tensor("LongStorage", "c", 1, 0, {}, {}, true);
  const std::string bytes = legacy_pth(entries, {{"a", 8, raw(data)}, {"b", 3, raw(half)}, {"c", 1, u64le(9)}});
  const StateDictFile sd = load_bytes(dir, bytes);
  // Expected independently: element (i, j) of a view is data[offset + i*stride0 + j*stride1].
  CHECK(sd.format == "legacy");
  REQUIRE(sd.tensors.size() == 2);
  CHECK(sd.tensors[0].first == "t");
  CHECK(sd.tensors[0].second.shape() == Shape{3, 2});
  CHECK(sd.tensors[0].second.to_vector() == std::vector<float>{1, 4, 2, 5, 3, 6});
  CHECK(sd.tensors[1].second.to_vector() == std::vector<float>{1, -1, 0.5f});
  REQUIRE(sd.ignored.size() == 1);
  CHECK(sd.ignored[0].name == "steps");
  CHECK(sd.ignored[0].dtype == "I64");
}

TEST_CASE("formats: legacy pth storage problems are errors naming the file") {
  TempDir dir;
  const std::string path = dir.file("model.pth");
  const std::vector<float> data = {0, 1, 2, 3, 4, 5};
  const std::string one = op_str("w") + op_tensor("FloatStorage", "a", 6, 0, {2, 3}, {3, 1}, true);
  // Shorter than declared: the count says 5 where the pickle says 6.
  expect_error([&] { load_bytes(dir, legacy_pth(one, {{"a", 5, raw(data)}})); },
               {path, "storage 'a' holds 5 elements, the pickle declares 6"});
  // Truncated data.
  expect_error([&] { load_bytes(dir, legacy_pth(one, {{"a", 6, raw(data).substr(0, 20)}})); },
               {path, "truncated: storage 'a' needs 6 x 4 bytes"});
  // A view reaching past its storage.
  const std::string past = op_str("w") + op_tensor("FloatStorage", "a", 6, 1, {2, 3}, {3, 1}, true);
  expect_error([&] { load_bytes(dir, legacy_pth(past, {{"a", 6, raw(data)}})); },
               {path, "tensor 'w'", "reaches past its storage 'a' of 6 elements"});
  // More than 4 dims.
  const std::string five = op_str("w") + op_tensor("FloatStorage", "a", 6, 0, {1, 1, 1, 2, 3}, {6, 6, 6, 3, 1}, true);
  expect_error([&] { load_bytes(dir, legacy_pth(five, {{"a", 6, raw(data)}})); }, {path, "tensor 'w'", "5 dims"});
  // A storage type outside the allow-list.
  const std::string cplx = op_str("w") + op_tensor("ComplexFloatStorage", "a", 3, 0, {3}, {1}, true);
  expect_error([&] { load_bytes(dir, legacy_pth(cplx, {{"a", 3, raw(data)}})); },
               {path, "disallowed global 'torch.ComplexFloatStorage'"});
  // Storage missing from the stream.
  expect_error([&] { load_bytes(dir, legacy_pth(one, {})); }, {path, "storage 'a' is not in the file"});
  // Not a tensor.
  expect_error([&] { load_bytes(dir, legacy_pth(op_str("w") + op_int(3), {})); },
               {path, "tensor 'w': value is int 3, expected a tensor"});
  // Wrong magic number.
  std::string bad_magic = legacy_pth(one, {{"a", 6, raw(data)}});
  bad_magic[4] = '\x00';
  expect_error([&] { load_bytes(dir, bad_magic); }, {path, "magic number"});
  // Every prefix of a good file fails cleanly.
  const std::string good = legacy_pth(one, {{"a", 6, raw(data)}});
  CHECK(load_bytes(dir, good).tensors.size() == 1);
  for (size_t cut = 0; cut < good.size(); cut += 3) {
    CAPTURE(cut);
    expect_error([&] { load_bytes(dir, good.substr(0, cut)); }, {path});
  }
}

TEST_CASE("formats: SHA-256 gives FIPS 180-4's digests, fed whole or in pieces, with and without SHA-NI") {
  // The digests of FIPS 180-2's examples (appendix B) and of the two longer standard messages.
  const std::string a896 =
      "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
  const std::vector<std::pair<std::string, std::string>> known = {
      {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
      {a896, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
      {std::string(1000000, 'a'), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"}};
  for (const auto& [msg, digest] : known) {
    CAPTURE(msg.size());
    CHECK(sha256_hex(msg) == digest);
    // In pieces of every size from 1 to 130 bytes (partial blocks before, between and after whole ones).
    for (size_t piece : {size_t{1}, size_t{7}, size_t{63}, size_t{64}, size_t{65}, size_t{130}}) {
      CAPTURE(piece);
      Sha256 h;
      for (size_t at = 0; at < msg.size(); at += piece) h.update(msg.data() + at, std::min(piece, msg.size() - at));
      CHECK(h.hex_digest() == digest);
    }
  }
  // The compression function both ways on random states and 1 to 5 random blocks.
  if (!sha256_detail::has_sha_ni()) {
    MESSAGE("this CPU has no SHA-NI: only the portable rounds ran (the digests above)");
    return;
  }
  Rng rng(29);
  for (int trial = 0; trial < 200; ++trial) {
    uint32_t h1[8], h2[8];
    for (int i = 0; i < 8; ++i) h1[i] = h2[i] = static_cast<uint32_t>(rng.next_u64());
    const size_t n = 1 + trial % 5;
    std::vector<uint8_t> data(64 * n);
    for (auto& b : data) b = static_cast<uint8_t>(rng.next_u64());
    sha256_detail::blocks_portable(h1, data.data(), n);
    sha256_detail::blocks_sha_ni(h2, data.data(), n);
    CAPTURE(trial);
    CHECK(std::equal(h1, h1 + 8, h2));
  }
}

}  // namespace test_formats
