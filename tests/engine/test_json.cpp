// Tests of ember::serialization::Json: parsing, writing, exact numbers, strict errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "ember/engine/error.h"
#include "ember/engine/serialization/json.h"

namespace {

using ember::Error;
using ember::serialization::Json;
using ember::serialization::parse_json;

Json parse(std::string_view s) { return parse_json(s, "test.json"); }

// The message of the ember::Error that parsing `text` throws ("" if it parses).
std::string parse_error(std::string_view text) {
  try {
    parse_json(text, "test.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Parsing must fail at byte `pos` with a message containing `part`.
void expect_parse_error(std::string_view text, size_t pos, const std::string& part) {
  SCOPED_TRACE(std::string(text));
  const std::string msg = parse_error(text);
  ASSERT_FALSE(msg.empty()) << "parsed without error";
  EXPECT_EQ(msg.rfind("test.json: invalid JSON at byte " + std::to_string(pos) + " ", 0), 0u) << msg;
  EXPECT_NE(msg.find(part), std::string::npos) << msg;
}

TEST(JsonTest, ParsesScalars) {
  EXPECT_TRUE(parse("null").is_null());
  EXPECT_TRUE(parse("true").as_bool());
  EXPECT_FALSE(parse(" false ").as_bool());
  EXPECT_EQ(parse("-12").as_int64(), -12);
  EXPECT_DOUBLE_EQ(parse("2.5e-3").as_double(), 2.5e-3);
  EXPECT_EQ(parse("\"hi\"").as_string(), "hi");
  EXPECT_EQ(parse("\n\t\r [ ] ").size(), 0u);
  EXPECT_EQ(parse("{}").size(), 0u);
}

TEST(JsonTest, CompactRoundTripKeepsTextAndOrder) {
  const char* texts[] = {
      R"({"z":1,"a":[true,false,null],"m":{"k":"v","b":-0.5e10},"e":{},"l":[]})",
      R"([1,2.50,1E+2,-0,1e-7,"\u00e9"])",  // numbers keep their spelling
      R"("")",
      R"([[[[]]]])",
  };
  for (const char* t : texts) {
    const Json j = parse(t);
    const std::string d = j.dump();
    EXPECT_EQ(parse(d), j) << t;
    EXPECT_EQ(parse(j.dump_pretty()), j) << t;
  }
  EXPECT_EQ(parse(texts[0]).dump(), texts[0]);
  EXPECT_EQ(parse(R"([1,2.50,1E+2,-0,1e-7])").dump(), "[1,2.50,1E+2,-0,1e-7]");
  // Member order is the file's, not sorted.
  const Json o = parse(texts[0]);
  ASSERT_EQ(o.members().size(), 5u);
  EXPECT_EQ(o.members()[0].first, "z");
  EXPECT_EQ(o.members()[1].first, "a");
  EXPECT_EQ(o["m"]["b"].as_double(), -0.5e10);
  EXPECT_EQ(o.at("a").at(0).as_bool(), true);
}

TEST(JsonTest, PrettyOutput) {
  const Json j = Json::object().set("a", 1).set("b", Json::array().push_back("x").push_back(Json())).set("c", Json::object());
  EXPECT_EQ(j.dump_pretty(), "{\n  \"a\": 1,\n  \"b\": [\n    \"x\",\n    null\n  ],\n  \"c\": {}\n}");
  EXPECT_EQ(j.dump(), R"({"a":1,"b":["x",null],"c":{}})");
}

TEST(JsonTest, BuildingValues) {
  Json cfg;  // null becomes an object on the first set
  cfg.set("method", "dde").set("lr", 1e-3).set("steps", int64_t{100000}).set("ema", true);
  cfg.set("lr", 2e-4);  // replaces in place, keeping the position
  EXPECT_EQ(cfg.dump(), R"({"method":"dde","lr":0.0002,"steps":100000,"ema":true})");
  Json list;
  list.push_back(1).push_back(std::string("two")).push_back(3.5f);
  EXPECT_EQ(list.dump(), R"([1,"two",3.5])");
  EXPECT_EQ(Json(std::string_view("sv")).dump(), "\"sv\"");
  EXPECT_EQ(Json(uint64_t{18446744073709551615u}).dump(), "18446744073709551615");
  EXPECT_EQ(Json(nullptr).dump(), "null");
  EXPECT_TRUE(cfg.contains("ema"));
  EXPECT_FALSE(cfg.contains("nope"));
  EXPECT_EQ(cfg.find("nope"), nullptr);
  EXPECT_EQ(Json::number_from_text("1.25e3").as_double(), 1250.0);
  EXPECT_THROW(Json::number_from_text("1.25e"), Error);
  EXPECT_THROW(Json::number_from_text("12 "), Error);
}

TEST(JsonTest, DoublesRoundTripAndIntegralsHaveNoExponent) {
  EXPECT_EQ(Json(0.1).dump(), "0.1");
  EXPECT_EQ(Json(3.0).dump(), "3");
  EXPECT_EQ(Json(-1e6).dump(), "-1000000");
  EXPECT_EQ(Json(1e15).dump(), "1000000000000000");
  EXPECT_EQ(Json(-0.0).dump(), "-0");
  EXPECT_EQ(Json(1e300).dump(), "1e+300");
  EXPECT_EQ(Json(1.5e-5).dump(), "1.5e-05");
  EXPECT_EQ(Json(1e-4).dump(), "0.0001");
  EXPECT_EQ(Json(0.1 + 0.2).dump(), "0.30000000000000004");
  EXPECT_EQ(Json(1e16 + 2).dump(), "1.0000000000000002e+16");
  EXPECT_EQ(parse(Json(1e6).dump()).as_int64(), 1000000);
  // Non-finite values have no JSON spelling: null keeps a metrics line well formed.
  EXPECT_TRUE(Json(std::nan("")).is_null());
  EXPECT_TRUE(Json(std::numeric_limits<double>::infinity()).is_null());

  std::mt19937_64 rng(7);
  for (int i = 0; i < 2000; ++i) {
    double x;
    const uint64_t bits = rng();
    std::memcpy(&x, &bits, sizeof x);
    if (!std::isfinite(x)) continue;
    const double y = parse(Json(x).dump()).as_double();
    EXPECT_EQ(std::memcmp(&x, &y, sizeof x), 0) << Json(x).dump();
  }
  for (double x : {5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.3, 1.0 / 3}) {
    EXPECT_EQ(parse(Json(x).dump()).as_double(), x);
  }
  // Out of range: overflow is an error, underflow is the nearest double, zero.
  EXPECT_THROW(parse("1e400").as_double(), Error);
  EXPECT_THROW(parse("-123456789e999999999999999999").as_double(), Error);
  EXPECT_EQ(parse("1e-400").as_double(), 0.0);
  EXPECT_TRUE(std::signbit(parse("-1e-400").as_double()));
}

TEST(JsonTest, BigIntegersAreExact) {
  // 2^53 + 1 is not a double; it must still read back exactly.
  EXPECT_EQ(parse("9007199254740993").as_int64(), 9007199254740993LL);
  EXPECT_EQ(parse("[9007199254740993]").dump(), "[9007199254740993]");
  EXPECT_EQ(parse("9223372036854775807").as_int64(), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(parse("-9223372036854775808").as_int64(), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(parse("18446744073709551615").as_uint64(), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(Json(std::numeric_limits<int64_t>::min()).as_int64(), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(parse("-0").as_uint64(), 0u);
  EXPECT_THROW(parse("9223372036854775808").as_int64(), Error);
  EXPECT_THROW(parse("18446744073709551616").as_uint64(), Error);
  EXPECT_THROW(parse("-1").as_uint64(), Error);
  EXPECT_THROW(parse("1.0").as_int64(), Error);  // integers only, spelled as integers
  EXPECT_THROW(parse("1e3").as_int64(), Error);
  EXPECT_TRUE(parse("-7").is_integer());
  EXPECT_FALSE(parse("7.0").is_integer());
  EXPECT_FALSE(parse("\"7\"").is_integer());
}

TEST(JsonTest, NumberEqualityIsByExactValue) {
  EXPECT_EQ(parse("1.0"), parse("1"));
  EXPECT_EQ(parse("10e-1"), parse("1"));
  EXPECT_EQ(parse("0.00120"), parse("1.2e-3"));
  EXPECT_EQ(parse("-0.0"), parse("0"));
  EXPECT_NE(parse("9007199254740993"), parse("9007199254740992"));
  EXPECT_NE(parse("1"), parse("-1"));
  EXPECT_NE(parse("1"), parse("\"1\""));
  EXPECT_NE(parse(R"({"a":1,"b":2})"), parse(R"({"b":2,"a":1})"));  // order matters
}

TEST(JsonTest, StringEscapes) {
  const Json s = parse(R"("q\" b\\ s\/ \b\f\n\r\t A\u0041 e\u00e9 eur\u20AC smile\ud83d\ude00")");
  EXPECT_EQ(s.as_string(), "q\" b\\ s/ \b\f\n\r\t AA e\xC3\xA9 eur\xE2\x82\xAC smile\xF0\x9F\x98\x80");
  // Raw UTF-8 passes through; the writer escapes only what JSON requires.
  EXPECT_EQ(parse("\"\xC3\xA9\xF0\x9F\x98\x80\"").as_string(), "\xC3\xA9\xF0\x9F\x98\x80");
  EXPECT_EQ(Json(std::string("a\"b\\c\n\x01\x1f/")).dump(), R"("a\"b\\c\n\u0001\u001f/")");
  // Every code unit below 128 survives a round trip.
  std::string all;
  for (int c = 1; c < 128; ++c) all += static_cast<char>(c);
  all += std::string(1, '\0');
  EXPECT_EQ(parse(Json(all).dump()).as_string(), all);
  // Invalid UTF-8 handed to the writer becomes U+FFFD so the output is valid JSON.
  EXPECT_EQ(Json(std::string("a\xFF" "b")).dump(), "\"a\xEF\xBF\xBD" "b\"");
  EXPECT_EQ(parse(Json(std::string("\xC3")).dump()).as_string(), "\xEF\xBF\xBD");
}

TEST(JsonTest, StringErrors) {
  expect_parse_error(R"("abc)", 0, "unterminated string");
  expect_parse_error("\"a\nb\"", 2, "control character byte 0x0A");
  expect_parse_error(R"("\x")", 1, "invalid escape");
  expect_parse_error(R"("\u12G4")", 5, "hex digit");
  expect_parse_error(R"("\u12)", 5, "end of input in a \\u escape");
  expect_parse_error(R"(["\ud83d"])", 2, "high surrogate not followed by a low surrogate");
  expect_parse_error(R"(["\ud83d\u0041"])", 2, "high surrogate not followed by a low surrogate");
  expect_parse_error(R"("\ude00")", 1, "unpaired low surrogate");
  expect_parse_error("\"\xFF\"", 1, "invalid UTF-8");
  expect_parse_error("\"\xC0\xAF\"", 1, "invalid UTF-8");          // overlong '/'
  expect_parse_error("\"\xED\xA0\x80\"", 1, "invalid UTF-8");      // encoded surrogate
  expect_parse_error("\"\xF4\x90\x80\x80\"", 1, "invalid UTF-8");  // above U+10FFFF
  expect_parse_error("\"\xE2\x82\"", 1, "invalid UTF-8");          // truncated sequence
}

TEST(JsonTest, SyntaxErrorsGivePositions) {
  expect_parse_error("", 0, "empty input");
  expect_parse_error("   ", 3, "empty input");
  expect_parse_error("[1,]", 3, "expected a value");
  expect_parse_error("[1 2]", 3, "expected ',' or ']'");
  expect_parse_error("[1", 2, "expected ',' or ']' in an array, got end of input");
  expect_parse_error(R"({"a" 1})", 5, "expected ':'");
  expect_parse_error(R"({"a":1,})", 7, "expected a string key");
  expect_parse_error(R"({a:1})", 1, "expected a string key");
  expect_parse_error(R"({"a":1 "b":2})", 7, "expected ',' or '}'");
  expect_parse_error("{} x", 3, "unexpected 'x' after the JSON value");
  expect_parse_error("1 2", 2, "after the JSON value");
  expect_parse_error("01", 1, "leading zeros");
  expect_parse_error("-", 1, "expected a digit");
  expect_parse_error("-a", 1, "expected a digit");
  expect_parse_error("1.", 2, "after the decimal point");
  expect_parse_error("1.e3", 2, "after the decimal point");
  expect_parse_error("1e", 2, "in the exponent");
  expect_parse_error("1e+", 3, "in the exponent");
  expect_parse_error("+1", 0, "unexpected '+'");
  expect_parse_error(".5", 0, "unexpected '.'");
  expect_parse_error("tru", 0, "expected 'true'");
  expect_parse_error("nulL", 0, "expected 'null'");
  expect_parse_error("NaN", 0, "unexpected 'N'");
  expect_parse_error("[Infinity]", 1, "unexpected 'I'");
  expect_parse_error("// c\n1", 0, "unexpected '/'");
  expect_parse_error("\xEF\xBB\xBF{}", 0, "byte 0xEF");  // no byte order mark
  expect_parse_error(std::string_view("[1,\0]", 5), 3, "byte 0x00");
  // Line and column are given too.
  const std::string msg = parse_error("{\n  \"a\" 1}");
  EXPECT_NE(msg.find("at byte 8 (line 2, column 7)"), std::string::npos) << msg;
}

TEST(JsonTest, DuplicateKeysAreErrors) {
  expect_parse_error(R"({"a":1,"a":2})", 7, "duplicate key \"a\"");
  expect_parse_error(R"({"a":{"b":1,"c":2,"b":3}})", 18, "duplicate key \"b\"");
  // Large objects take the hashed path.
  std::string big = "{";
  for (int i = 0; i < 100; ++i) big += "\"k" + std::to_string(i) + "\":" + std::to_string(i) + ",";
  const size_t pos = big.size();
  expect_parse_error(big + "\"k42\":0}", pos, "duplicate key \"k42\"");
  EXPECT_EQ(parse(big + "\"k100\":0}").size(), 101u);
}

TEST(JsonTest, DepthLimit) {
  auto nested = [](int depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  EXPECT_NO_THROW(parse(nested(64)));
  expect_parse_error(nested(65), 64, "nesting deeper than 64 levels");
  std::string objects;
  for (int i = 0; i < 65; ++i) objects += "{\"a\":";
  objects += "1" + std::string(65, '}');
  expect_parse_error(objects, 64 * 5, "nesting deeper than 64");
  // Deep input far beyond the limit is refused, not a stack overflow.
  EXPECT_FALSE(parse_error(std::string(100000, '[')).empty());
}

TEST(JsonTest, AccessorTypeErrors) {
  const Json j = parse(R"({"n":1,"s":"x","a":[1]})");
  EXPECT_THROW(j["n"].as_string(), Error);
  EXPECT_THROW(j["s"].as_double(), Error);
  EXPECT_THROW(j["s"].as_bool(), Error);
  EXPECT_THROW(j["a"].members(), Error);
  EXPECT_THROW(j["missing"], Error);
  EXPECT_THROW(j["a"][1], Error);
  EXPECT_THROW(j["n"].size(), Error);
  EXPECT_THROW(Json(1).set("k", 2), Error);
  EXPECT_THROW(Json("s").push_back(2), Error);
  try {
    (void)j["missing"];
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no member \"missing\""), std::string::npos) << e.what();
  }
  try {
    (void)j["s"].as_double();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("JSON value is a string, expected a number"), std::string::npos) << e.what();
  }
}

TEST(JsonTest, Utf8Validation) {
  EXPECT_TRUE(ember::serialization::is_valid_utf8(""));
  EXPECT_TRUE(ember::serialization::is_valid_utf8("plain \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"));
  EXPECT_FALSE(ember::serialization::is_valid_utf8("\xC3"));
  EXPECT_FALSE(ember::serialization::is_valid_utf8("\xE0\x80\x80"));  // overlong
  EXPECT_FALSE(ember::serialization::is_valid_utf8("\xED\xBF\xBF"));  // surrogate
  EXPECT_FALSE(ember::serialization::is_valid_utf8("\x80"));
}

TEST(JsonTest, ErrorNamesTheInput) {
  try {
    parse_json("[", "runs/x/config.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("runs/x/config.json: invalid JSON at byte 1", 0), 0u) << e.what();
  }
}

}  // namespace
