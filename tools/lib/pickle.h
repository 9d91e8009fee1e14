// A small, safe pickle reader: enough of Python's pickle VM to read what torch.save writes
// (shared/FORMATS.md lists the opcodes), and nothing that could run code. GLOBAL only names
// a callable the caller allowed; REDUCE never calls it but records a Call node (callee +
// arguments) that the caller interprets; BINPERSID records the persistent id. Any other
// opcode, any other global, a truncated stream or hostile nesting is a trick::Error naming
// the source, the problem and the byte offset.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace trick {

struct PickleValue {
  enum class Kind { None, Bool, Int, BigInt, String, Tuple, List, Dict, Global, Call, PersistentId };
  Kind kind = Kind::None;
  int64_t i = 0;   // Int; Bool (0 or 1)
  std::string s;   // String (as stored, UTF-8); BigInt (little-endian two's complement bytes);
                   // Global ("module.name")
  // Tuple, List: the elements. Dict: key, value, key, value... in insertion order (duplicates
  // are kept; the caller decides). Call: {callee (a Global), args (a Tuple)}. PersistentId: {pid}.
  std::vector<const PickleValue*> items;
  const PickleValue* state = nullptr;  // the argument of BUILD, recorded and not applied
  int depth = 0;                       // nesting below this value (0 for scalars)
  size_t offset = 0;                   // byte offset of the opcode that made it

  bool is(Kind k) const { return kind == k; }
  size_t size() const { return items.size(); }
  const PickleValue* operator[](size_t k) const { return items[k]; }
};

// Short description for error messages: "int 5", "string 'cpu'", "tuple of 3", "call of x.y".
std::string describe(const PickleValue* v);

struct PickleOptions {
  // Globals ("module.name") a GLOBAL opcode may name; any other is an error.
  std::set<std::string> allowed_globals;
  // Globals that REDUCE with no arguments turns into an empty dict (collections.OrderedDict).
  std::set<std::string> dict_types;
  // Nesting limit: deeper structures are refused (a state dict nests about 5 deep).
  int max_depth = 100;
};

// The result of one pickle: the root value (the arena owns every value, so shared and even
// cyclic references are harmless and destruction is never recursive) and where it ended.
struct Pickle {
  std::shared_ptr<void> arena;
  const PickleValue* root = nullptr;
  size_t end = 0;  // offset just past STOP, relative to `data`
};

// Runs one pickle starting at data[0]; `what` prefixes every error ("model.pth: data.pkl"),
// `base` is added to offsets in messages (where `data` starts in the file).
Pickle parse_pickle(const uint8_t* data, size_t size, const std::string& what, const PickleOptions& options,
                    size_t base = 0);

}  // namespace trick
