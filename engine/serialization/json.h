// A small JSON value type with a strict parser and a compact / pretty writer.
//
// Used for the safetensors header, config.json and metrics.jsonl. Two choices set it apart
// from a generic JSON library:
//  - Numbers keep their original text. A safetensors data offset or an int64 step count is
//    read back exactly (as_int64 / as_uint64 parse the digits), never through a double that
//    would round 2^53 + 1 to 2^53. as_double parses the same text on demand.
//  - Objects keep their members in insertion (file) order, so a header lists its tensors
//    in file order and a config is written in the order the program set it.
//
// The parser follows RFC 8259 strictly (no comments, no trailing commas, no NaN, no lone
// surrogates, valid UTF-8 only), rejects duplicate object keys and trailing garbage, and
// limits nesting to 64 levels. Every error is an ember::Error naming what was being parsed
// and the byte position, e.g. "config.json: invalid JSON at byte 17 (line 2, column 5):
// expected ':' after an object key".
#pragma once
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace ember::serialization {

class Json {
 public:
  enum class Type { Null, Bool, Number, String, Array, Object };
  using Array = std::vector<Json>;
  using Member = std::pair<std::string, Json>;
  using Object = std::vector<Member>;  // insertion order; keys are unique

  // ---- construction --------------------------------------------------------------------
  Json() = default;  // null
  Json(std::nullptr_t) {}
  Json(bool b) : value_(b) {}
  // Any integer type (but not bool, which has its own overload): stored as its exact text.
  template <std::integral T>
    requires(!std::same_as<T, bool>)
  Json(T v) : value_(Number{std::to_string(v)}) {}
  // Doubles are stored as the shortest text that reads back to the same double; integral
  // values below 2^53 are written without exponent (1000000, not 1e+06). NaN and infinities
  // have no JSON spelling: they become null, as JavaScript's JSON.stringify does, so that a
  // diverged loss in metrics.jsonl is still a well-formed line.
  Json(double v);
  Json(float v) : Json(static_cast<double>(v)) {}
  Json(std::string s) : value_(std::move(s)) {}
  Json(std::string_view s) : value_(std::string(s)) {}
  Json(const char* s) : value_(std::string(s)) {}
  Json(Array a) : value_(std::move(a)) {}

  static Json array() { return Json(Array{}); }
  static Json object() {
    Json j;
    j.value_ = Object{};
    return j;
  }
  // A number from its JSON text (validated), e.g. to pass through a value read elsewhere.
  static Json number_from_text(std::string_view text);

  // ---- inspection ----------------------------------------------------------------------
  Type type() const { return static_cast<Type>(value_.index()); }
  static const char* type_name(Type t);  // "null", "bool", "number", ...
  const char* type_name() const { return type_name(type()); }
  bool is_null() const { return type() == Type::Null; }
  bool is_bool() const { return type() == Type::Bool; }
  bool is_number() const { return type() == Type::Number; }
  bool is_string() const { return type() == Type::String; }
  bool is_array() const { return type() == Type::Array; }
  bool is_object() const { return type() == Type::Object; }
  // A number written without fraction or exponent ("-12", not "12.0" or "1e3").
  bool is_integer() const;

  // Accessors throw ember::Error when the value has another type (or does not fit).
  bool as_bool() const;
  double as_double() const;    // error if the magnitude overflows a double; underflow -> 0
  int64_t as_int64() const;    // integers only (is_integer), exactly, within int64
  uint64_t as_uint64() const;  // integers only, exactly, within [0, 2^64)
  const std::string& as_string() const;
  const std::string& number_text() const;  // the number exactly as parsed / formatted
  const Array& items() const;
  Array& items();
  const Object& members() const;
  Object& members();

  // Element count of an array or object (error for other types).
  size_t size() const;
  const Json& at(size_t index) const;  // array element, bounds-checked
  const Json& operator[](size_t index) const { return at(index); }
  // Object member lookup (linear: objects here are small, or iterated in order instead).
  const Json* find(std::string_view key) const;
  Json* find(std::string_view key);
  bool contains(std::string_view key) const { return find(key) != nullptr; }
  const Json& at(std::string_view key) const;  // error naming the key if it is missing
  // (No const char* overload: it would make j[0] ambiguous.)
  const Json& operator[](std::string_view key) const { return at(key); }

  // ---- building ------------------------------------------------------------------------
  // Object: replaces the member `key` if present, else appends it. Returns *this so that
  // calls chain: Json::object().set("step", 10).set("loss", 0.25).
  Json& set(std::string key, Json value);
  // Array: appends. Returns *this.
  Json& push_back(Json value);

  // ---- writing -------------------------------------------------------------------------
  // Compact, no spaces: suitable for one metrics.jsonl line or a safetensors header.
  // Strings are written as UTF-8; invalid UTF-8 bytes in a string are replaced by U+FFFD so
  // that the output is always valid JSON.
  std::string dump() const;
  // Indented by `indent` spaces per level, one member / element per line.
  std::string dump_pretty(int indent = 2) const;

  // Deep equality; numbers compare by exact decimal value ("1.0" == "1" == "10e-1", and
  // 9007199254740993 != 9007199254740992), object members compare in order.
  friend bool operator==(const Json& a, const Json& b);

 private:
  struct Number {
    std::string text;
  };
  friend class JsonParser;
  // The index of each alternative equals its Type enumerator.
  std::variant<std::monostate, bool, Number, std::string, Array, Object> value_;
};

// Parses `text` as exactly one JSON value (surrounding whitespace allowed). `what` names the
// input in error messages (a file name, "safetensors header of x.safetensors", ...).
Json parse_json(std::string_view text, const std::string& what);

// True if `s` is well-formed UTF-8 (no overlong forms, surrogates or code points above
// U+10FFFF): the strings parse_json accepts and dump writes unchanged.
bool is_valid_utf8(std::string_view s);

// Maximum nesting depth of arrays / objects accepted by parse_json.
inline constexpr int kJsonMaxDepth = 64;

}  // namespace ember::serialization
