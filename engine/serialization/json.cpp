#include "ember/engine/serialization/json.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <unordered_set>

#include "ember/engine/error.h"

namespace ember::serialization {

namespace {

// ---- UTF-8 ------------------------------------------------------------------------------

// Length of the well-formed UTF-8 sequence starting at p (of `avail` bytes), or 0 if it is
// not well formed. Follows the table of Unicode 15 §3.9 (D92): no overlong forms, no UTF-16
// surrogates (U+D800..U+DFFF), nothing above U+10FFFF.
size_t utf8_sequence_length(const unsigned char* p, size_t avail) {
  const unsigned char c = p[0];
  auto cont = [&](size_t i, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    return i < avail && p[i] >= lo && p[i] <= hi;
  };
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
  if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return cont(1) && cont(2) ? 3 : 0;
  if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
  if (c == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// ---- numbers ----------------------------------------------------------------------------

// Length of the longest prefix of s that is a JSON number, or 0 if none. Grammar (RFC 8259):
//   -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
// On failure `why` says what was expected and `fail_at` where.
size_t scan_number(std::string_view s, const char** why, size_t* fail_at) {
  auto digit = [&](size_t i) { return i < s.size() && s[i] >= '0' && s[i] <= '9'; };
  auto fail = [&](size_t at, const char* msg) {
    *why = msg;
    *fail_at = at;
    return size_t{0};
  };
  size_t i = 0;
  if (i < s.size() && s[i] == '-') ++i;
  if (!digit(i)) return fail(i, "expected a digit");
  if (s[i] == '0') {
    ++i;
    if (digit(i)) return fail(i, "leading zeros are not allowed in a number");
  } else {
    while (digit(i)) ++i;
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (!digit(i)) return fail(i, "expected a digit after the decimal point");
    while (digit(i)) ++i;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (!digit(i)) return fail(i, "expected a digit in the exponent");
    while (digit(i)) ++i;
  }
  return i;
}

// A number's exact value as sign × digits × 10^exponent with no leading or trailing zeros in
// `digits` (zero: empty digits, exponent 0, not negative). Two JSON numbers are equal iff
// their Decimals are equal, whatever their spelling.
struct Decimal {
  bool negative = false;
  std::string digits;
  int64_t exponent = 0;
  bool operator==(const Decimal&) const = default;
};

Decimal to_decimal(std::string_view text) {  // text is a valid JSON number
  Decimal d;
  size_t i = 0;
  if (text[i] == '-') {
    d.negative = true;
    ++i;
  }
  int64_t frac_digits = 0;
  bool in_frac = false;
  for (; i < text.size() && text[i] != 'e' && text[i] != 'E'; ++i) {
    if (text[i] == '.') {
      in_frac = true;
      continue;
    }
    if (in_frac) ++frac_digits;
    if (!d.digits.empty() || text[i] != '0') d.digits += text[i];  // drop leading zeros
  }
  int64_t exp = 0;
  if (i < text.size()) {  // exponent; saturate: anything past 1e15 is out of every range
    ++i;
    bool neg = false;
    if (text[i] == '+' || text[i] == '-') neg = text[i++] == '-';
    for (; i < text.size(); ++i) exp = std::min<int64_t>(exp * 10 + (text[i] - '0'), 1'000'000'000'000'000);
    if (neg) exp = -exp;
  }
  if (d.digits.empty()) return Decimal{};  // zero, whatever its sign or exponent
  d.exponent = exp - frac_digits;
  while (d.digits.back() == '0') {
    d.digits.pop_back();
    ++d.exponent;
  }
  return d;
}

std::string format_double(double v) {
  char buf[64];
  std::to_chars_result r;
  // Integral values that a double holds exactly are written as plain integers, so that a
  // step count or an image size stored as double reads as one (and parses with as_int64).
  if (v == std::trunc(v) && std::fabs(v) < 9007199254740992.0) {
    r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
  } else {
    // The shortest digits that read back to the same double, laid out as Python's repr
    // does: positional for decimal exponents in [-4, 16) ("0.0002", not "2e-04"),
    // scientific otherwise ("1e-05", "1.5e+300").
    r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
    const char* e = std::find(buf, r.ptr, 'e');
    int exp = 0;
    std::from_chars(e + (e[1] == '+' ? 2 : 1), r.ptr, exp);
    if (exp >= -4 && exp < 16) r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
  }
  return std::string(buf, r.ptr);
}

// ---- writing ----------------------------------------------------------------------------

void write_string(std::string& out, const std::string& s) {
  static const char* hex = "0123456789abcdef";
  out += '"';
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++i;
    } else if (c < 0x20) {
      out += '\\';
      switch (c) {
        case '\b': out += 'b'; break;
        case '\f': out += 'f'; break;
        case '\n': out += 'n'; break;
        case '\r': out += 'r'; break;
        case '\t': out += 't'; break;
        default:
          out += "u00";
          out += hex[c >> 4];
          out += hex[c & 15];
      }
      ++i;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
    } else if (size_t len = utf8_sequence_length(p + i, n - i)) {
      out.append(s, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER for each invalid byte
      ++i;
    }
  }
  out += '"';
}

}  // namespace

// ---- parser -----------------------------------------------------------------------------

class JsonParser {
 public:
  JsonParser(std::string_view text, const std::string& what) : s_(text), what_(what) {}

  Json parse_document() {
    skip_ws();
    if (pos_ == s_.size()) fail("empty input, expected a JSON value");
    Json v = parse_value();
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected ", describe(pos_), " after the JSON value");
    return v;
  }

 private:
  std::string_view s_;
  const std::string& what_;
  size_t pos_ = 0;
  int depth_ = 0;

  // Throws "<what>: invalid JSON at byte P (line L, column C): <message>" for position `at`.
  template <typename... Args>
  [[noreturn]] void fail_at(size_t at, const Args&... message) const {
    size_t line = 1, line_start = 0;
    for (size_t i = 0; i < at && i < s_.size(); ++i) {
      if (s_[i] == '\n') {
        ++line;
        line_start = i + 1;
      }
    }
    EMBER_FAIL(what_, ": invalid JSON at byte ", at, " (line ", line, ", column ", at - line_start + 1,
               "): ", message...);
  }
  template <typename... Args>
  [[noreturn]] void fail(const Args&... message) const {
    fail_at(pos_, message...);
  }

  // "end of input", "'x'" or "byte 0xNN" for the byte at i.
  std::string describe(size_t i) const {
    if (i >= s_.size()) return "end of input";
    const auto c = static_cast<unsigned char>(s_[i]);
    if (c > 0x20 && c < 0x7F) return std::string("'") + static_cast<char>(c) + "'";
    char buf[16];
    std::snprintf(buf, sizeof buf, "byte 0x%02X", c);
    return buf;
  }

  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }

  Json parse_value() {
    if (pos_ >= s_.size()) fail("unexpected end of input, expected a value");
    const char c = s_[pos_];
    switch (c) {
      case '{': return parse_object();
      case '[': return parse_array();
      case '"': return Json(parse_string());
      case 't': return parse_literal("true", Json(true));
      case 'f': return parse_literal("false", Json(false));
      case 'n': return parse_literal("null", Json());
      default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number();
        fail("unexpected ", describe(pos_), ", expected a value (object, array, string, number, true, false or null)");
    }
  }

  Json parse_literal(std::string_view word, Json value) {
    if (s_.substr(pos_, word.size()) != word) fail("invalid literal, expected '", word, "'");
    pos_ += word.size();
    return value;
  }

  Json parse_number() {
    const char* why = nullptr;
    size_t fail_pos = 0;
    const size_t len = scan_number(s_.substr(pos_), &why, &fail_pos);
    if (len == 0) fail_at(pos_ + fail_pos, why, ", got ", describe(pos_ + fail_pos));
    Json j;
    j.value_ = Json::Number{std::string(s_.substr(pos_, len))};
    pos_ += len;
    return j;
  }

  uint32_t parse_hex4() {  // pos_ at the first of 4 hex digits
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      if (pos_ >= s_.size()) fail("unexpected end of input in a \\u escape");
      const char c = s_[pos_];
      uint32_t d;
      if (c >= '0' && c <= '9') d = c - '0';
      else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      else fail("expected a hex digit in a \\u escape, got ", describe(pos_));
      v = v * 16 + d;
      ++pos_;
    }
    return v;
  }

  std::string parse_string() {  // pos_ at the opening quote
    const size_t start = pos_;
    ++pos_;
    std::string out;
    const auto* p = reinterpret_cast<const unsigned char*>(s_.data());
    while (true) {
      if (pos_ >= s_.size()) fail_at(start, "unterminated string");
      const unsigned char c = p[pos_];
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c == '\\') {
        parse_escape(out);
      } else if (c < 0x20) {
        fail("control character ", describe(pos_), " in a string must be escaped");
      } else if (c < 0x80) {
        out += static_cast<char>(c);
        ++pos_;
      } else {
        const size_t len = utf8_sequence_length(p + pos_, s_.size() - pos_);
        if (len == 0) fail("invalid UTF-8 sequence in a string (", describe(pos_), ")");
        out.append(s_.data() + pos_, len);
        pos_ += len;
      }
    }
  }

  void parse_escape(std::string& out) {  // pos_ at the backslash
    const size_t start = pos_;
    ++pos_;
    if (pos_ >= s_.size()) fail("unexpected end of input in an escape");
    const char e = s_[pos_++];
    switch (e) {
      case '"': out += '"'; return;
      case '\\': out += '\\'; return;
      case '/': out += '/'; return;
      case 'b': out += '\b'; return;
      case 'f': out += '\f'; return;
      case 'n': out += '\n'; return;
      case 'r': out += '\r'; return;
      case 't': out += '\t'; return;
      case 'u': break;
      default: fail_at(start, "invalid escape: backslash followed by ", describe(start + 1));
    }
    uint32_t cp = parse_hex4();
    if (cp >= 0xDC00 && cp <= 0xDFFF) fail_at(start, "unpaired low surrogate in a \\u escape");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      // UTF-16 surrogate pair: the high half must be followed by a \u escape of a low half.
      if (s_.substr(pos_, 2) != "\\u") fail_at(start, "high surrogate not followed by a low surrogate");
      pos_ += 2;
      const uint32_t lo = parse_hex4();
      if (lo < 0xDC00 || lo > 0xDFFF) fail_at(start, "high surrogate not followed by a low surrogate");
      cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    append_utf8(out, cp);
  }

  void enter() {
    if (++depth_ > kJsonMaxDepth) fail("nesting deeper than ", kJsonMaxDepth, " levels");
  }

  Json parse_array() {  // pos_ at '['
    enter();
    ++pos_;
    Json::Array items;
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
    } else {
      while (true) {
        skip_ws();
        items.push_back(parse_value());
        skip_ws();
        if (pos_ < s_.size() && s_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (pos_ < s_.size() && s_[pos_] == ']') {
          ++pos_;
          break;
        }
        fail("expected ',' or ']' in an array, got ", describe(pos_));
      }
    }
    --depth_;
    return Json(std::move(items));
  }

  Json parse_object() {  // pos_ at '{'
    enter();
    ++pos_;
    Json::Object members;
    // Duplicate keys are an error (RFC 8259 leaves them undefined; a safetensors header
    // listing a tensor twice must not silently pick one). Small objects are scanned; large
    // ones (a header of a big model) use a hash set so parsing stays linear.
    std::unordered_set<std::string> seen;
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
    } else {
      while (true) {
        skip_ws();
        if (pos_ >= s_.size() || s_[pos_] != '"') fail("expected a string key in an object, got ", describe(pos_));
        const size_t key_pos = pos_;
        std::string key = parse_string();
        bool dup;
        if (members.size() < 16) {
          dup = std::any_of(members.begin(), members.end(), [&](const Json::Member& m) { return m.first == key; });
        } else {
          if (seen.empty()) {
            for (const auto& m : members) seen.insert(m.first);
          }
          dup = !seen.insert(key).second;
        }
        if (dup) fail_at(key_pos, "duplicate key ", Json(key).dump(), " in an object");
        skip_ws();
        if (pos_ >= s_.size() || s_[pos_] != ':') fail("expected ':' after an object key, got ", describe(pos_));
        ++pos_;
        skip_ws();
        Json value = parse_value();
        members.emplace_back(std::move(key), std::move(value));
        skip_ws();
        if (pos_ < s_.size() && s_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (pos_ < s_.size() && s_[pos_] == '}') {
          ++pos_;
          break;
        }
        fail("expected ',' or '}' in an object, got ", describe(pos_));
      }
    }
    --depth_;
    Json j = Json::object();
    j.members() = std::move(members);
    return j;
  }
};

Json parse_json(std::string_view text, const std::string& what) { return JsonParser(text, what).parse_document(); }

bool is_valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0; i < s.size();) {
    const size_t len = utf8_sequence_length(p + i, s.size() - i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

// ---- Json members -----------------------------------------------------------------------

Json::Json(double v) {
  if (std::isfinite(v)) value_ = Number{format_double(v)};
  // else: null (see the header)
}

Json Json::number_from_text(std::string_view text) {
  const char* why = nullptr;
  size_t at = 0;
  const size_t len = scan_number(text, &why, &at);
  EMBER_CHECK(len != 0 && len == text.size(), "Json::number_from_text: '", text, "' is not a JSON number");
  Json j;
  j.value_ = Number{std::string(text)};
  return j;
}

const char* Json::type_name(Type t) {
  switch (t) {
    case Type::Null: return "null";
    case Type::Bool: return "bool";
    case Type::Number: return "number";
    case Type::String: return "string";
    case Type::Array: return "array";
    case Type::Object: return "object";
  }
  return "?";
}

namespace {
[[noreturn]] void wrong_type(const char* wanted, const Json& j) {
  const Json::Type t = j.type();
  const char* article = t == Json::Type::Array || t == Json::Type::Object ? "an " : "a ";
  EMBER_FAIL("JSON value is ", t == Json::Type::Null ? "" : article, j.type_name(), ", expected ", wanted);
}
}  // namespace

bool Json::is_integer() const {
  if (!is_number()) return false;
  return number_text().find_first_of(".eE") == std::string::npos;
}

bool Json::as_bool() const {
  if (!is_bool()) wrong_type("a bool", *this);
  return std::get<bool>(value_);
}

const std::string& Json::number_text() const {
  if (!is_number()) wrong_type("a number", *this);
  return std::get<Number>(value_).text;
}

double Json::as_double() const {
  const std::string& t = number_text();
  double v = 0;
  const auto r = std::from_chars(t.data(), t.data() + t.size(), v);
  if (r.ec == std::errc::result_out_of_range) {
    // Out of range means overflow (error) or underflow below the smallest subnormal, where 0
    // is the nearest double. The decimal exponent of the leading digit tells which.
    const Decimal d = to_decimal(t);
    EMBER_CHECK(d.exponent + static_cast<int64_t>(d.digits.size()) - 1 < 0, "JSON number ", t,
                " is out of the range of a double");
    return d.negative ? -0.0 : 0.0;
  }
  EMBER_CHECK(r.ec == std::errc() && r.ptr == t.data() + t.size(), "JSON number ", t, " does not parse as a double");
  return v;
}

int64_t Json::as_int64() const {
  const std::string& t = number_text();
  EMBER_CHECK(is_integer(), "JSON number ", t, " is not an integer");
  int64_t v = 0;
  const auto r = std::from_chars(t.data(), t.data() + t.size(), v);
  EMBER_CHECK(r.ec == std::errc() && r.ptr == t.data() + t.size(), "JSON integer ", t, " does not fit in int64");
  return v;
}

uint64_t Json::as_uint64() const {
  const std::string& t = number_text();
  EMBER_CHECK(is_integer(), "JSON number ", t, " is not an integer");
  if (t[0] == '-') {
    EMBER_CHECK(t == "-0", "JSON integer ", t, " is negative, expected an unsigned integer");
    return 0;
  }
  uint64_t v = 0;
  const auto r = std::from_chars(t.data(), t.data() + t.size(), v);
  EMBER_CHECK(r.ec == std::errc() && r.ptr == t.data() + t.size(), "JSON integer ", t, " does not fit in uint64");
  return v;
}

const std::string& Json::as_string() const {
  if (!is_string()) wrong_type("a string", *this);
  return std::get<std::string>(value_);
}

const Json::Array& Json::items() const {
  if (!is_array()) wrong_type("an array", *this);
  return std::get<Array>(value_);
}
Json::Array& Json::items() {
  if (!is_array()) wrong_type("an array", *this);
  return std::get<Array>(value_);
}
const Json::Object& Json::members() const {
  if (!is_object()) wrong_type("an object", *this);
  return std::get<Object>(value_);
}
Json::Object& Json::members() {
  if (!is_object()) wrong_type("an object", *this);
  return std::get<Object>(value_);
}

size_t Json::size() const {
  if (is_array()) return std::get<Array>(value_).size();
  if (is_object()) return std::get<Object>(value_).size();
  wrong_type("an array or an object", *this);
}

const Json& Json::at(size_t index) const {
  const Array& a = items();
  EMBER_CHECK(index < a.size(), "JSON array index ", index, " out of range for an array of ", a.size(), " elements");
  return a[index];
}

const Json* Json::find(std::string_view key) const {
  for (const Member& m : members()) {
    if (m.first == key) return &m.second;
  }
  return nullptr;
}
Json* Json::find(std::string_view key) {
  return const_cast<Json*>(static_cast<const Json*>(this)->find(key));
}

const Json& Json::at(std::string_view key) const {
  const Json* v = find(key);
  EMBER_CHECK(v != nullptr, "JSON object has no member ", Json(key).dump());
  return *v;
}

Json& Json::set(std::string key, Json value) {
  if (is_null()) value_ = Object{};  // a default-constructed Json becomes an object
  if (Json* existing = find(key)) {
    *existing = std::move(value);
  } else {
    members().emplace_back(std::move(key), std::move(value));
  }
  return *this;
}

Json& Json::push_back(Json value) {
  if (is_null()) value_ = Array{};  // a default-constructed Json becomes an array
  items().push_back(std::move(value));
  return *this;
}

namespace {
// indent < 0: compact. Otherwise `indent` spaces per level, starting at `level`.
void write(std::string& out, const Json& j, int indent, int level) {
  auto newline = [&](int lvl) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<size_t>(indent) * lvl, ' ');
  };
  switch (j.type()) {
    case Json::Type::Null: out += "null"; return;
    case Json::Type::Bool: out += j.as_bool() ? "true" : "false"; return;
    case Json::Type::Number: out += j.number_text(); return;
    case Json::Type::String: write_string(out, j.as_string()); return;
    case Json::Type::Array: {
      const auto& a = j.items();
      out += '[';
      for (size_t i = 0; i < a.size(); ++i) {
        if (i) out += ',';
        newline(level + 1);
        write(out, a[i], indent, level + 1);
      }
      if (!a.empty()) newline(level);
      out += ']';
      return;
    }
    case Json::Type::Object: {
      const auto& o = j.members();
      out += '{';
      for (size_t i = 0; i < o.size(); ++i) {
        if (i) out += ',';
        newline(level + 1);
        write_string(out, o[i].first);
        out += indent < 0 ? ":" : ": ";
        write(out, o[i].second, indent, level + 1);
      }
      if (!o.empty()) newline(level);
      out += '}';
      return;
    }
  }
}
}  // namespace

std::string Json::dump() const {
  std::string out;
  write(out, *this, -1, 0);
  return out;
}

std::string Json::dump_pretty(int indent) const {
  std::string out;
  write(out, *this, std::max(indent, 0), 0);
  return out;
}

bool operator==(const Json& a, const Json& b) {
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case Json::Type::Null: return true;
    case Json::Type::Bool: return a.as_bool() == b.as_bool();
    case Json::Type::Number:
      return a.number_text() == b.number_text() || to_decimal(a.number_text()) == to_decimal(b.number_text());
    case Json::Type::String: return a.as_string() == b.as_string();
    case Json::Type::Array: return a.items() == b.items();
    case Json::Type::Object: return a.members() == b.members();
  }
  return false;
}

}  // namespace ember::serialization
