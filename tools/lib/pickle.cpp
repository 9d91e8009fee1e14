#include "tools/lib/pickle.h"

#include <cstring>
#include <deque>
#include <unordered_map>

#include "tensor/error.h"

namespace trick {

namespace {

// Every opcode of pickle protocols 0-5, so an unsupported one is reported by name.
const char* opcode_name(uint8_t op) {
  switch (op) {
    case '(': return "MARK";
    case '.': return "STOP";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 'F': return "FLOAT";
    case 'I': return "INT";
    case 'J': return "BININT";
    case 'K': return "BININT1";
    case 'L': return "LONG";
    case 'M': return "BININT2";
    case 'N': return "NONE";
    case 'P': return "PERSID";
    case 'Q': return "BINPERSID";
    case 'R': return "REDUCE";
    case 'S': return "STRING";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";
    case 'X': return "BINUNICODE";
    case 'a': return "APPEND";
    case 'b': return "BUILD";
    case 'c': return "GLOBAL";
    case 'd': return "DICT";
    case '}': return "EMPTY_DICT";
    case 'e': return "APPENDS";
    case 'g': return "GET";
    case 'h': return "BINGET";
    case 'i': return "INST";
    case 'j': return "LONG_BINGET";
    case 'l': return "LIST";
    case ']': return "EMPTY_LIST";
    case 'o': return "OBJ";
    case 'p': return "PUT";
    case 'q': return "BINPUT";
    case 'r': return "LONG_BINPUT";
    case 's': return "SETITEM";
    case 't': return "TUPLE";
    case ')': return "EMPTY_TUPLE";
    case 'u': return "SETITEMS";
    case 'G': return "BINFLOAT";
    case 0x80: return "PROTO";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";
    case 0x87: return "TUPLE3";
    case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";
    case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";
    case 0x8e: return "BINBYTES8";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x93: return "STACK_GLOBAL";
    case 0x94: return "MEMOIZE";
    case 0x95: return "FRAME";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    default: return nullptr;
  }
}

std::string hex_byte(uint8_t b) {
  const char* digits = "0123456789abcdef";
  return std::string("0x") + digits[b >> 4] + digits[b & 15];
}

using Kind = PickleValue::Kind;

// Values are never freed one by one: a deque keeps addresses stable as it grows.
struct Arena {
  std::deque<PickleValue> values;
};

class Vm {
 public:
  Vm(const uint8_t* data, size_t size, const std::string& what, const PickleOptions& opt, size_t base)
      : d_(data), n_(size), what_(what), opt_(opt), base_(base), arena_(std::make_shared<Arena>()) {}

  Pickle run() {
    for (;;) {
      TRICK_CHECK(pos_ < n_, what_, ": pickle truncated at byte ", base_ + pos_, " (no STOP opcode)");
      at_ = pos_;
      op_ = d_[pos_++];
      switch (op_) {
        case 0x80: {  // PROTO
          const uint8_t proto = u8();
          if (proto > 5) error("pickle protocol ", int(proto), " is newer than 5");
          break;
        }
        case '.': {  // STOP
          if (!marks_.empty()) error("STOP with an open MARK");
          if (stack_.size() != 1) error("STOP with ", stack_.size(), " values on the stack (expected 1)");
          Pickle p;
          p.arena = arena_;
          p.root = stack_.back();
          p.end = pos_;
          return p;
        }
        case 'N': push(make(Kind::None)); break;
        case 0x88:
        case 0x89: {  // NEWTRUE, NEWFALSE
          PickleValue* v = make(Kind::Bool);
          v->i = op_ == 0x88;
          push(v);
          break;
        }
        case 'J': {  // BININT: 4-byte signed
          const uint32_t u = static_cast<uint32_t>(le(4));
          int32_t s;
          std::memcpy(&s, &u, 4);
          push_int(s);
          break;
        }
        case 'K': push_int(static_cast<int64_t>(le(1))); break;  // BININT1
        case 'M': push_int(static_cast<int64_t>(le(2))); break;  // BININT2
        case 0x8a: {                                             // LONG1: n bytes, little-endian two's complement
          const size_t len = u8();
          const uint8_t* p = take(len);
          if (len <= 8) {
            uint64_t u = 0;
            for (size_t k = 0; k < len; ++k) u |= static_cast<uint64_t>(p[k]) << (8 * k);
            if (len > 0 && len < 8 && (p[len - 1] & 0x80)) u |= ~uint64_t(0) << (8 * len);  // sign-extend
            int64_t s;
            std::memcpy(&s, &u, 8);
            push_int(s);
          } else {
            PickleValue* v = make(Kind::BigInt);
            v->s.assign(reinterpret_cast<const char*>(p), len);
            push(v);
          }
          break;
        }
        case 'X':       // BINUNICODE: 4-byte length
        case 0x8c: {    // SHORT_BINUNICODE: 1-byte length
          const size_t len = static_cast<size_t>(le(op_ == 'X' ? 4 : 1));
          const uint8_t* p = take(len);
          PickleValue* v = make(Kind::String);
          v->s.assign(reinterpret_cast<const char*>(p), len);
          push(v);
          break;
        }
        case 'c': {  // GLOBAL: "module\nname\n"
          const std::string module = line();
          const std::string name = line();
          const std::string full = module + "." + name;
          if (!opt_.allowed_globals.count(full)) error("disallowed global '", full, "' (only the types of a torch state dict are read)");
          PickleValue* v = make(Kind::Global);
          v->s = full;
          push(v);
          break;
        }
        case '}': push(make(Kind::Dict)); break;   // EMPTY_DICT
        case ']': push(make(Kind::List)); break;   // EMPTY_LIST
        case ')': push(make(Kind::Tuple)); break;  // EMPTY_TUPLE
        case '(':                                  // MARK
          if (marks_.size() >= kMaxStack) error("too many open MARKs");
          marks_.push_back(stack_.size());
          break;
        case 't': {  // TUPLE: everything since the mark
          PickleValue* v = make(Kind::Tuple);
          for (PickleValue* x : pop_mark()) add(v, x);
          push(v);
          break;
        }
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1/2/3
          const size_t k = static_cast<size_t>(op_ - 0x84);
          std::vector<PickleValue*> xs(k);
          for (size_t j = k; j-- > 0;) xs[j] = pop();
          PickleValue* v = make(Kind::Tuple);
          for (PickleValue* x : xs) add(v, x);
          push(v);
          break;
        }
        case 'a': {  // APPEND
          PickleValue* x = pop();
          add(expect(top(), Kind::List, "APPEND to"), x);
          break;
        }
        case 'e': {  // APPENDS
          std::vector<PickleValue*> xs = pop_mark();
          PickleValue* list = expect(top(), Kind::List, "APPENDS to");
          for (PickleValue* x : xs) add(list, x);
          break;
        }
        case 's': {  // SETITEM
          PickleValue* value = pop();
          PickleValue* key = pop();
          PickleValue* dict = expect(top(), Kind::Dict, "SETITEM on");
          add(dict, key);
          add(dict, value);
          break;
        }
        case 'u': {  // SETITEMS
          std::vector<PickleValue*> xs = pop_mark();
          if (xs.size() % 2) error("SETITEMS with an odd number (", xs.size(), ") of keys and values");
          PickleValue* dict = expect(top(), Kind::Dict, "SETITEMS on");
          for (PickleValue* x : xs) add(dict, x);
          break;
        }
        case 'q': memo_put(le(1)); break;  // BINPUT
        case 'r': memo_put(le(4)); break;  // LONG_BINPUT
        case 'h': memo_get(le(1)); break;  // BINGET
        case 'j': memo_get(le(4)); break;  // LONG_BINGET
        case 'Q': {                        // BINPERSID: recorded, resolved by the caller
          PickleValue* pid = pop();
          PickleValue* v = make(Kind::PersistentId);
          add(v, pid);
          push(v);
          break;
        }
        case 'R': {  // REDUCE: never calls anything
          PickleValue* args = expect(pop(), Kind::Tuple, "REDUCE with arguments");
          PickleValue* callee = expect(pop(), Kind::Global, "REDUCE of");
          if (opt_.dict_types.count(callee->s)) {
            if (args->size()) error(callee->s, " called with ", args->size(), " arguments (expected none)");
            push(make(Kind::Dict));
          } else {
            PickleValue* v = make(Kind::Call);
            add(v, callee);
            add(v, args);
            push(v);
          }
          break;
        }
        case 'b': {  // BUILD: keep the state for the caller, apply nothing
          PickleValue* state = pop();
          PickleValue* target = top();
          if (!target->is(Kind::Dict) && !target->is(Kind::Call))
            error("BUILD on ", describe(target), " (expected a dict or a reduced object)");
          target->state = state;
          deepen(target, state);
          break;
        }
        default: {
          const char* name = opcode_name(op_);
          if (name) error("unsupported pickle opcode ", name, " (", hex_byte(op_), ")");
          error("unknown pickle opcode ", hex_byte(op_), " (not a pickle, or a corrupt one)");
        }
      }
    }
  }

 private:
  static constexpr size_t kMaxStack = 1 << 20;
  const uint8_t* d_;
  size_t n_;
  const std::string& what_;
  const PickleOptions& opt_;
  size_t base_;
  std::shared_ptr<Arena> arena_;
  size_t pos_ = 0, at_ = 0;
  uint8_t op_ = 0;
  std::vector<PickleValue*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PickleValue*> memo_;

  template <typename... Args>
  [[noreturn]] void error(const Args&... args) const {
    const char* name = opcode_name(op_);
    fail(what_, ": ", args..., " at byte ", base_ + at_, name ? cat(" (", name, ")") : std::string());
  }

  const uint8_t* take(size_t len) {
    if (len > n_ - pos_)
      fail(what_, ": pickle truncated at byte ", base_ + n_, " (", opcode_name(op_), " at byte ", base_ + at_,
           " needs ", len, " more bytes, ", n_ - pos_, " left)");
    const uint8_t* p = d_ + pos_;
    pos_ += len;
    return p;
  }
  uint8_t u8() { return *take(1); }
  uint64_t le(size_t len) {
    const uint8_t* p = take(len);
    uint64_t u = 0;
    for (size_t k = 0; k < len; ++k) u |= static_cast<uint64_t>(p[k]) << (8 * k);
    return u;
  }
  std::string line() {
    const size_t start = pos_;
    while (pos_ < n_ && d_[pos_] != '\n') {
      if (pos_ - start > 256) error("GLOBAL name longer than 256 bytes");
      ++pos_;
    }
    if (pos_ >= n_) fail(what_, ": pickle truncated at byte ", base_ + n_, " (inside GLOBAL at byte ", base_ + at_, ")");
    return std::string(reinterpret_cast<const char*>(d_ + start), pos_++ - start);
  }

  PickleValue* make(Kind k) {
    arena_->values.emplace_back();
    PickleValue* v = &arena_->values.back();
    v->kind = k;
    v->offset = base_ + at_;
    return v;
  }
  void push(PickleValue* v) {
    if (stack_.size() >= kMaxStack) error("pickle stack deeper than ", kMaxStack, " values");
    stack_.push_back(v);
  }
  void push_int(int64_t i) {
    PickleValue* v = make(Kind::Int);
    v->i = i;
    push(v);
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  PickleValue* pop() {
    if (stack_.size() <= floor()) error("pickle stack underflow");
    PickleValue* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  PickleValue* top() const {
    if (stack_.size() <= floor()) error("pickle stack underflow");
    return stack_.back();
  }
  std::vector<PickleValue*> pop_mark() {
    if (marks_.empty()) error("no MARK to pop to");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PickleValue*> xs(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return xs;
  }
  PickleValue* expect(PickleValue* v, Kind k, const char* doing) const {
    if (!v->is(k)) error(doing, " ", describe(v));
    return v;
  }
  // Nesting is tracked as values are put inside one another, so a hostile stream is refused
  // while it is being read rather than when someone later walks it.
  void deepen(PickleValue* parent, const PickleValue* child) {
    if (child->depth + 1 > parent->depth) parent->depth = child->depth + 1;
    if (parent->depth > opt_.max_depth) error("values nested deeper than ", opt_.max_depth, " levels");
  }
  void add(PickleValue* parent, PickleValue* child) {
    parent->items.push_back(child);
    deepen(parent, child);
  }
  void memo_put(uint64_t idx) {
    if (memo_.size() >= kMaxStack && !memo_.count(idx)) error("more than ", kMaxStack, " memo entries");
    memo_[idx] = top();
  }
  void memo_get(uint64_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end()) error("memo slot ", idx, " read before it was written");
    push(it->second);
  }
};

}  // namespace

std::string describe(const PickleValue* v) {
  switch (v->kind) {
    case Kind::None: return "None";
    case Kind::Bool: return v->i ? "True" : "False";
    case Kind::Int: return cat("int ", v->i);
    case Kind::BigInt: return cat("a ", v->s.size(), "-byte int");
    case Kind::String: return cat("string '", v->s.size() > 60 ? v->s.substr(0, 60) + "..." : v->s, "'");
    case Kind::Tuple: return cat("a tuple of ", v->size());
    case Kind::List: return cat("a list of ", v->size());
    case Kind::Dict: return cat("a dict of ", v->size() / 2);
    case Kind::Global: return cat("global ", v->s);
    case Kind::Call: return cat("a call of ", v->items[0]->s);
    case Kind::PersistentId: return "a persistent id";
  }
  return "?";
}

Pickle parse_pickle(const uint8_t* data, size_t size, const std::string& what, const PickleOptions& options,
                    size_t base) {
  return Vm(data, size, what, options, base).run();
}

}  // namespace trick
