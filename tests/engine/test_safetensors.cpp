// Tensor-level safetensors: round trips of every dtype, metadata, bad files as errors naming
// the file, and writes that never leave a torn file behind.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

#include "ember/ember.h"
#include "ember/engine/serialization/file_io.h"
#include "ember/engine/serialization/safetensors.h"

using namespace ember;

TEST(Safetensors, RoundTripsEveryDtypeAndMetadata) {
  std::string path = testing::TempDir() + "/ember_st_roundtrip.safetensors";
  Generator g(5);
  std::map<std::string, Tensor> t{{"a.f32", randn({3, 5}, {}, &g)},
                                  {"b.f64", randn({7}, {.dtype = DType::f64}, &g)},
                                  {"c.i64", randint(-100, 100, {2, 2}, {.dtype = DType::i64}, &g)},
                                  {"d.i32", randint(-100, 100, {4}, {.dtype = DType::i32}, &g)},
                                  {"e.u8", randint(0, 255, {6}, {.dtype = DType::u8}, &g)},
                                  {"f.bool", gt(randn({5}, {}, &g), 0.0)},
                                  {"g.bf16", randn({3}, {}, &g).to(DType::bf16)},
                                  {"h.empty", zeros({0, 4})},
                                  {"i.view", randn({4, 6}, {}, &g).t()}};  // non-contiguous source
  save_safetensors(path, t, {{"step", "12"}, {"note", "ember"}});
  SafetensorsFile f = load_safetensors(path);
  ASSERT_EQ(f.tensors.size(), t.size());
  for (auto& [k, v] : t) {
    ASSERT_TRUE(f.tensors.count(k)) << k;
    EXPECT_EQ(f.tensors[k].dtype(), v.dtype()) << k;
    EXPECT_EQ(f.tensors[k].sizes(), v.sizes()) << k;
    EXPECT_EQ(f.tensors[k].to_vector<double>(), v.to_vector<double>()) << k;
  }
  EXPECT_EQ(f.metadata["step"], "12");
  std::remove(path.c_str());
}

TEST(Safetensors, BadFilesAreErrorsNamingTheFile) {
  std::string path = testing::TempDir() + "/ember_st_bad.safetensors";
  save_safetensors(path, {{"w", randn({4, 4})}});
  auto bytes = serialization::read_file(path);
  for (size_t cut : {size_t(0), size_t(5), size_t(8), size_t(20), bytes.size() - 1}) {
    std::vector<uint8_t> part(bytes.begin(), bytes.begin() + static_cast<long>(cut));
    try {
      parse_safetensors_tensors(part.data(), part.size(), "cut.safetensors");
      FAIL() << "truncated at " << cut << " parsed";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("cut.safetensors"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(load_safetensors(testing::TempDir() + "/does_not_exist.safetensors"), Error);
  // a BOOL tensor holding a byte other than 0/1
  save_safetensors(path, {{"m", gt(randn({8}), 0.0)}});
  bytes = serialization::read_file(path);
  bytes.back() = 7;
  EXPECT_THROW(parse_safetensors_tensors(bytes.data(), bytes.size(), "bool.safetensors"), Error);
  std::remove(path.c_str());
}

TEST(Safetensors, FailedWriteLeavesThePreviousFileIntact) {
  std::string dir = testing::TempDir() + "/ember_st_atomic";
  std::string path = dir + "/ckpt.safetensors";
  std::remove(path.c_str());
  ::mkdir(dir.c_str(), 0755);
  save_safetensors(path, {{"w", ones({3})}});
  // A tensor the writer cannot hold makes the save fail before the rename: the old file stays.
  EXPECT_THROW(save_safetensors(path, {{"x", ones({2})}, {"y", Tensor()}}), Error);
  SafetensorsFile f = load_safetensors(path);
  EXPECT_EQ(f.tensors["w"].to_vector<float>(), (std::vector<float>{1, 1, 1}));
  // No temporary files are left behind by successful writes.
  save_safetensors(path, {{"w", zeros({3})}});
  std::ifstream tmp(path + ".tmp-" + std::to_string(::getpid()));
  EXPECT_FALSE(tmp.good());
}
