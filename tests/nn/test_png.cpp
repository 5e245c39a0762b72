// PNG encoder/decoder and the colormap/image helpers. The decoder is checked against files
// this test builds by hand (its own filter code, zlib for compression and CRCs), so a
// mistake shared by our encoder and decoder cannot hide behind a round trip, and against a
// battery of corrupt inputs that must each give an ember::Error, never a crash.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "ember/engine/error.h"
#include "ember/nn/data/colormap.h"
#include "ember/nn/data/png.h"

namespace ember::data {
namespace {

using Bytes = std::vector<uint8_t>;

void be32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
}

Bytes chunk(const std::string& type, const Bytes& data) {
  Bytes c;
  be32(c, uint32_t(data.size()));
  c.insert(c.end(), type.begin(), type.end());
  c.insert(c.end(), data.begin(), data.end());
  be32(c, uint32_t(crc32(0, c.data() + 4, uInt(4 + data.size()))));
  return c;
}

Bytes ihdr(uint32_t w, uint32_t h, int depth, int color, int interlace = 0) {
  Bytes d;
  be32(d, w);
  be32(d, h);
  d.insert(d.end(), {uint8_t(depth), uint8_t(color), 0, 0, uint8_t(interlace)});
  return chunk("IHDR", d);
}

Bytes zlib_compress(const Bytes& raw) {
  uLongf n = compressBound(uLong(raw.size()));
  Bytes out(n);
  EXPECT_EQ(compress2(out.data(), &n, raw.data(), uLong(raw.size()), 9), Z_OK);
  out.resize(n);
  return out;
}

Bytes png_file(const std::vector<Bytes>& chunks) {
  Bytes f = {137, 'P', 'N', 'G', '\r', '\n', 26, '\n'};
  for (const Bytes& c : chunks) f.insert(f.end(), c.begin(), c.end());
  return f;
}

// Packs one row of samples at `depth` bits, most significant bits first, as PNG stores them.
Bytes pack_row(const std::vector<uint32_t>& samples, int depth) {
  Bytes row((samples.size() * depth + 7) / 8, 0);
  for (size_t i = 0; i < samples.size(); ++i) {
    if (depth == 16) {
      row[2 * i] = uint8_t(samples[i] >> 8);
      row[2 * i + 1] = uint8_t(samples[i]);
    } else if (depth == 8) {
      row[i] = uint8_t(samples[i]);
    } else {
      size_t bit = i * depth;
      row[bit / 8] |= uint8_t(samples[i] << (8 - depth - bit % 8));
    }
  }
  return row;
}

int predictor(int type, int a, int b, int c) {
  switch (type) {
    case 1: return a;
    case 2: return b;
    case 3: return (a + b) >> 1;
    case 4: {
      int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
      return (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
    }
    default: return 0;
  }
}

// The filtered, uncompressed image data: per row a filter byte then the residuals.
Bytes filter_rows(const std::vector<Bytes>& rows, size_t bpp, const std::vector<int>& types) {
  Bytes out;
  Bytes prev(rows[0].size(), 0);
  for (size_t y = 0; y < rows.size(); ++y) {
    int t = types[y % types.size()];
    out.push_back(uint8_t(t));
    for (size_t i = 0; i < rows[y].size(); ++i) {
      int a = i >= bpp ? rows[y][i - bpp] : 0, c = i >= bpp ? prev[i - bpp] : 0;
      out.push_back(uint8_t(rows[y][i] - predictor(t, a, prev[i], c)));
    }
    prev = rows[y];
  }
  return out;
}

// A complete PNG of the given samples (rows of width * samples_per_pixel values).
Bytes make_png(uint32_t w, int depth, int color, const std::vector<std::vector<uint32_t>>& samples,
               const std::vector<int>& filters, const std::vector<Bytes>& before_idat = {}) {
  static const int kSamples[7] = {1, 0, 3, 1, 2, 0, 4};
  std::vector<Bytes> rows;
  for (const auto& r : samples) rows.push_back(pack_row(r, depth));
  size_t bpp = std::max<size_t>(1, size_t(kSamples[color] * depth / 8));
  std::vector<Bytes> chunks = {ihdr(w, uint32_t(samples.size()), depth, color)};
  chunks.insert(chunks.end(), before_idat.begin(), before_idat.end());
  chunks.push_back(chunk("IDAT", zlib_compress(filter_rows(rows, bpp, filters))));
  chunks.push_back(chunk("IEND", {}));
  return png_file(chunks);
}

Image decode(const Bytes& f, const std::string& name = "test.png") { return decode_png(f.data(), f.size(), name); }

// Expects decoding to throw an ember::Error whose message names the file and contains `what`.
void expect_error(const Bytes& f, const std::string& what) {
  try {
    decode(f, "bad.png");
    ADD_FAILURE() << "decoding succeeded; expected an error about '" << what << "'";
  } catch (const ember::Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("bad.png"), std::string::npos) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << "message '" << msg << "' lacks '" << what << "'";
  }
}

// Random pixels, biased so that neighbouring pixels correlate (so every filter is useful
// somewhere) but never all zero.
Image random_image(int w, int h, int c, uint32_t seed) {
  std::mt19937 rng(seed);
  Image img{w, h, c, Bytes(size_t(w) * h * c)};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < c; ++k) {
        uint8_t smooth = uint8_t(x * 7 + y * 3 + k * 50), noise = uint8_t(rng());
        img.pixels[(size_t(y) * w + x) * c + k] = (rng() % 3 == 0) ? noise : uint8_t(smooth + noise % 4);
      }
  img.pixels[0] |= 1;
  return img;
}

// Walks the chunks of a file we made: (type, data) pairs, CRCs checked.
std::vector<std::pair<std::string, Bytes>> chunks_of(const Bytes& f) {
  std::vector<std::pair<std::string, Bytes>> out;
  size_t pos = 8;
  while (pos + 12 <= f.size()) {
    uint32_t len = (uint32_t(f[pos]) << 24) | (f[pos + 1] << 16) | (f[pos + 2] << 8) | f[pos + 3];
    std::string type(f.begin() + pos + 4, f.begin() + pos + 8);
    Bytes data(f.begin() + pos + 8, f.begin() + pos + 8 + len);
    uint32_t stored = (uint32_t(f[pos + 8 + len]) << 24) | (f[pos + 9 + len] << 16) | (f[pos + 10 + len] << 8) |
                      f[pos + 11 + len];
    EXPECT_EQ(stored, uint32_t(crc32(0, f.data() + pos + 4, uInt(4 + len)))) << "CRC of " << type;
    out.emplace_back(type, data);
    pos += 12 + len;
  }
  EXPECT_EQ(pos, f.size());
  return out;
}

Bytes inflate_all(const Bytes& z, size_t expected) {
  Bytes out(expected);
  uLongf n = uLongf(expected);
  EXPECT_EQ(uncompress(out.data(), &n, z.data(), uLong(z.size())), Z_OK);
  EXPECT_EQ(n, expected);
  return out;
}

// ---- encoder ----------------------------------------------------------------------------

TEST(PngTest, RoundTripEveryChannelCountAtOddSizes) {
  const std::pair<int, int> sizes[] = {{1, 1}, {7, 5}, {33, 17}, {1, 40}, {40, 1}, {63, 65}};
  uint32_t seed = 1;
  for (int c = 1; c <= 4; ++c)
    for (auto [w, h] : sizes) {
      Image img = random_image(w, h, c, seed++);
      Bytes f = encode_png(img);
      Image back = decode(f);
      EXPECT_EQ(back.width, w);
      EXPECT_EQ(back.height, h);
      EXPECT_EQ(back.channels, c);
      EXPECT_EQ(back.pixels, img.pixels) << c << " channels, " << w << " x " << h;
    }
}

TEST(PngTest, EncodedFileHasValidStructure) {
  Image img = random_image(9, 4, 3, 7);
  Bytes f = encode_png(img);
  ASSERT_GE(f.size(), 8u);
  EXPECT_EQ(Bytes(f.begin(), f.begin() + 8), (Bytes{137, 'P', 'N', 'G', '\r', '\n', 26, '\n'}));
  auto chunks = chunks_of(f);
  ASSERT_GE(chunks.size(), 3u);
  EXPECT_EQ(chunks.front().first, "IHDR");
  EXPECT_EQ(chunks.front().second, (Bytes{0, 0, 0, 9, 0, 0, 0, 4, 8, 2, 0, 0, 0}));
  EXPECT_EQ(chunks.back().first, "IEND");
  EXPECT_TRUE(chunks.back().second.empty());
  // Colour types for 1, 2, 4 channels.
  for (auto [c, type] : {std::pair{1, 0}, {2, 4}, {4, 6}})
    EXPECT_EQ(chunks_of(encode_png(random_image(2, 2, c, 3))).front().second[9], type);
}

TEST(PngTest, EncoderPicksAFilterPerRow) {
  // A horizontal ramp is best predicted from the left, a vertical one from above (Up).
  Image across{64, 8, 1, Bytes(64 * 8)}, down{64, 8, 1, Bytes(64 * 8)};
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 64; ++x) {
      across.pixels[y * 64 + x] = uint8_t(2 * x + 10 * y + 1);  // no wrap-around below 256
      down.pixels[y * 64 + x] = uint8_t(17 * y + ((x * 37) % 11) * 20 + 1);
    }
  auto filters = [](const Image& img) {
    Bytes idat;
    for (auto& [t, d] : chunks_of(encode_png(img)))
      if (t == "IDAT") idat.insert(idat.end(), d.begin(), d.end());
    Bytes raw = inflate_all(idat, size_t(img.height) * (img.width + 1));
    std::vector<int> types;
    for (int y = 0; y < img.height; ++y) types.push_back(raw[size_t(y) * (img.width + 1)]);
    return types;
  };
  // Across the ramp, Paeth predicts from the left like Sub, and also from above for the first
  // pixel of a row, so it may win from row 1 on; None and Up never should.
  auto a = filters(across);
  EXPECT_EQ(a[0], 1);
  for (size_t y = 1; y < a.size(); ++y) EXPECT_TRUE(a[y] == 1 || a[y] == 4) << "row " << y << ": " << a[y];
  auto d = filters(down);
  for (size_t y = 1; y < d.size(); ++y) EXPECT_EQ(d[y], 2) << "row " << y;
}

TEST(PngTest, EncoderRejectsMalformedImages) {
  EXPECT_THROW(encode_png(Image{}), ember::Error);
  EXPECT_THROW(encode_png(Image{2, 2, 5, Bytes(20)}), ember::Error);
  EXPECT_THROW(encode_png(Image{2, 2, 0, Bytes()}), ember::Error);
  EXPECT_THROW(encode_png(Image{2, 2, 3, Bytes(11)}), ember::Error);
  EXPECT_THROW(encode_png(Image{-2, 2, 1, Bytes(4)}), ember::Error);
}

TEST(PngTest, WriteAndReadFile) {
  auto dir = std::filesystem::temp_directory_path() / ("ember_png_test_" + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "img.png").string();
  Image a = random_image(13, 11, 3, 42), b = random_image(5, 6, 4, 43);
  write_png(path, a);
  EXPECT_EQ(read_png(path).pixels, a.pixels);
  write_png(path, b);  // replaces the old file whole
  Image back = read_png(path);
  EXPECT_EQ(back.channels, 4);
  EXPECT_EQ(back.pixels, b.pixels);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  const std::string missing_dir = (dir / "no" / "such" / "x.png").string();
  try {
    write_png(missing_dir, a);
    ADD_FAILURE() << "write into a missing folder succeeded";
  } catch (const ember::Error& e) {
    EXPECT_NE(std::string(e.what()).find(missing_dir), std::string::npos) << e.what();
  }
  try {
    read_png((dir / "absent.png").string());
    ADD_FAILURE() << "reading a missing file succeeded";
  } catch (const ember::Error& e) {
    EXPECT_NE(std::string(e.what()).find("absent.png"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_png(dir.string()), ember::Error);  // a folder is not a PNG
  {
    std::ofstream(dir / "junk.png") << "this is not a png";
  }
  EXPECT_THROW(read_png((dir / "junk.png").string()), ember::Error);
  std::filesystem::remove_all(dir);
}

// ---- decoder on hand-built files -----------------------------------------------------------

TEST(PngTest, DecodesEveryFilterTypeForEveryLayout) {
  struct Layout {
    int color, depth, out_channels;
  };
  const Layout layouts[] = {{0, 8, 1}, {4, 8, 2}, {2, 8, 3}, {6, 8, 4}, {0, 16, 1}, {2, 16, 3}, {6, 16, 4}};
  std::mt19937 rng(5);
  for (const Layout& L : layouts) {
    const int samples = L.color == 0 ? 1 : L.color == 4 ? 2 : L.color == 2 ? 3 : 4;
    const uint32_t w = 11, h = 6, maxv = (1u << L.depth) - 1;
    std::vector<std::vector<uint32_t>> rows(h, std::vector<uint32_t>(w * samples));
    for (auto& r : rows)
      for (uint32_t& v : r) v = rng() & maxv;
    Bytes expected;
    for (auto& r : rows)
      for (uint32_t v : r) expected.push_back(L.depth == 16 ? uint8_t(std::lround(v * 255.0 / 65535.0)) : uint8_t(v));
    std::vector<std::vector<int>> filter_sets = {{0}, {1}, {2}, {3}, {4}, {4, 3, 2, 1, 0}};
    for (const auto& filters : filter_sets) {
      Image img = decode(make_png(w, L.depth, L.color, rows, filters));
      EXPECT_EQ(img.width, int(w));
      EXPECT_EQ(img.height, int(h));
      EXPECT_EQ(img.channels, L.out_channels);
      EXPECT_EQ(img.pixels, expected) << "color " << L.color << " depth " << L.depth << " filter " << filters[0];
    }
  }
}

TEST(PngTest, SixteenBitSamplesRoundToEightBits) {
  std::vector<uint32_t> v = {0, 128, 129, 257, 32767, 32768, 65278, 65535};
  Image img = decode(make_png(uint32_t(v.size()), 16, 0, {v}, {0}));
  EXPECT_EQ(img.pixels, (Bytes{0, 0, 1, 1, 127, 128, 254, 255}));
}

TEST(PngTest, LowBitDepthGrayScalesToFullRange) {
  for (int depth : {1, 2, 4}) {
    const uint32_t w = 13, maxv = (1u << depth) - 1;  // 13 leaves a partial last byte
    std::vector<std::vector<uint32_t>> rows(3, std::vector<uint32_t>(w));
    Bytes expected;
    for (uint32_t y = 0; y < 3; ++y)
      for (uint32_t x = 0; x < w; ++x) {
        rows[y][x] = (x * 5 + y) % (maxv + 1);
        expected.push_back(uint8_t(rows[y][x] * 255 / maxv));
      }
    for (int f : {0, 1, 4}) {
      Image img = decode(make_png(w, depth, 0, rows, {f}));
      EXPECT_EQ(img.channels, 1);
      EXPECT_EQ(img.pixels, expected) << "depth " << depth;
    }
  }
}

TEST(PngTest, PaletteExpandsToRgbOrRgba) {
  const Bytes plte = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30};
  for (int depth : {2, 4, 8}) {
    const uint32_t w = 7;
    std::vector<std::vector<uint32_t>> rows(2, std::vector<uint32_t>(w));
    for (uint32_t y = 0; y < 2; ++y)
      for (uint32_t x = 0; x < w; ++x) rows[y][x] = (x + y) % 4;
    Image rgb = decode(make_png(w, depth, 3, rows, {0, 2}, {chunk("PLTE", plte)}));
    ASSERT_EQ(rgb.channels, 3);
    Image rgba = decode(make_png(w, depth, 3, rows, {1}, {chunk("PLTE", plte), chunk("tRNS", {0, 128})}));
    ASSERT_EQ(rgba.channels, 4);
    for (uint32_t y = 0; y < 2; ++y)
      for (uint32_t x = 0; x < w; ++x) {
        uint32_t i = rows[y][x];
        size_t p = y * w + x;
        for (int c = 0; c < 3; ++c) {
          EXPECT_EQ(rgb.pixels[p * 3 + c], plte[i * 3 + c]);
          EXPECT_EQ(rgba.pixels[p * 4 + c], plte[i * 3 + c]);
        }
        // tRNS covers entries 0 and 1; later entries are opaque.
        EXPECT_EQ(rgba.pixels[p * 4 + 3], i == 0 ? 0 : i == 1 ? 128 : 255);
      }
  }
  // 1-bit palette with two entries.
  Image bw = decode(make_png(3, 1, 3, {{0, 1, 0}}, {0}, {chunk("PLTE", {0, 0, 0, 9, 9, 9})}));
  EXPECT_EQ(bw.pixels, (Bytes{0, 0, 0, 9, 9, 9, 0, 0, 0}));
}

TEST(PngTest, TrnsAddsAlphaToGrayAndRgb) {
  Image g = decode(make_png(3, 8, 0, {{5, 7, 5}}, {0}, {chunk("tRNS", {0, 5})}));
  EXPECT_EQ(g.channels, 2);
  EXPECT_EQ(g.pixels, (Bytes{5, 0, 7, 255, 5, 0}));
  Image rgb = decode(make_png(2, 8, 2, {{1, 2, 3, 1, 2, 4}}, {0}, {chunk("tRNS", {0, 1, 0, 2, 0, 3})}));
  EXPECT_EQ(rgb.channels, 4);
  EXPECT_EQ(rgb.pixels, (Bytes{1, 2, 3, 0, 1, 2, 4, 255}));
}

TEST(PngTest, AcceptsSplitIdatAndSkipsAncillaryChunks) {
  Image src = random_image(10, 7, 3, 99);
  std::vector<std::vector<uint32_t>> rows(7);
  for (int y = 0; y < 7; ++y) rows[y].assign(src.pixels.begin() + y * 30, src.pixels.begin() + (y + 1) * 30);
  Bytes whole = make_png(10, 8, 2, rows, {0, 1, 2, 3, 4});
  // Rebuild the file with the compressed stream cut into IDATs of 1..n bytes, an empty one,
  // and ancillary chunks (known and unknown) before them, and junk after IEND.
  Bytes z;
  for (auto& [t, d] : chunks_of(whole))
    if (t == "IDAT") z = d;
  std::vector<Bytes> chunks = {ihdr(10, 7, 8, 2), chunk("tEXt", {'a', 0, 'b'}), chunk("xyZw", {1, 2, 3})};
  chunks.push_back(chunk("IDAT", {}));
  for (size_t off = 0, step = 1; off < z.size(); off += step, ++step)
    chunks.push_back(chunk("IDAT", Bytes(z.begin() + off, z.begin() + std::min(z.size(), off + step))));
  chunks.push_back(chunk("IEND", {}));
  Bytes f = png_file(chunks);
  f.insert(f.end(), {1, 2, 3});
  EXPECT_EQ(decode(f).pixels, src.pixels);
}

TEST(PngTest, InterlacedIsRefusedClearly) {
  Bytes f = png_file({ihdr(4, 4, 8, 0, 1), chunk("IDAT", zlib_compress(Bytes(20, 0))), chunk("IEND", {})});
  expect_error(f, "Adam7");
}

// ---- corrupt input -----------------------------------------------------------------------

Bytes small_valid_png() { return encode_png(random_image(5, 4, 3, 11)); }

TEST(PngTest, EveryTruncationIsAnError) {
  Bytes f = small_valid_png();
  ASSERT_NO_THROW(decode(f));
  for (size_t n = 0; n < f.size(); ++n) {
    Bytes cut(f.begin(), f.begin() + n);
    try {
      decode(cut, "cut.png");
      ADD_FAILURE() << "truncated to " << n << " bytes decoded without error";
    } catch (const ember::Error& e) {
      EXPECT_NE(std::string(e.what()).find("cut.png"), std::string::npos) << e.what();
    }
  }
  // No data pointer at all.
  EXPECT_THROW(decode_png(nullptr, 0, "null.png"), ember::Error);
}

TEST(PngTest, EveryBitFlipIsAnError) {
  Bytes f = small_valid_png();
  for (size_t i = 0; i < f.size(); ++i)
    for (int bit : {0, 3, 7}) {
      Bytes g = f;
      g[i] ^= uint8_t(1 << bit);
      EXPECT_THROW(decode(g), ember::Error) << "flip of bit " << bit << " at byte " << i;
    }
}

TEST(PngTest, MutationsPastTheCrcNeverCrash) {
  // Mutate chunk payloads and then repair the CRCs, so the damage reaches IHDR parsing,
  // inflate, unfiltering and palette lookup. Each outcome must be a clean image or an Error.
  std::vector<Bytes> seeds = {small_valid_png(),
                              make_png(5, 2, 3, {{0, 1, 2, 3, 0}, {3, 2, 1, 0, 1}}, {0, 4},
                                       {chunk("PLTE", {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}), chunk("tRNS", {7})}),
                              make_png(3, 16, 6, {{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}}, {3})};
  std::mt19937 rng(2024);
  int decoded = 0, errors = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    auto chunks = chunks_of(seeds[iter % seeds.size()]);
    auto& target = chunks[rng() % chunks.size()].second;
    if (target.empty()) continue;
    int edits = 1 + int(rng() % 4);
    for (int e = 0; e < edits; ++e) target[rng() % target.size()] = uint8_t(rng());
    std::vector<Bytes> rebuilt;
    for (auto& [t, d] : chunks) rebuilt.push_back(chunk(t, d));
    try {
      Image img = decode(png_file(rebuilt));
      EXPECT_EQ(img.pixels.size(), size_t(img.width) * img.height * img.channels);
      ++decoded;
    } catch (const ember::Error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 0);
  EXPECT_GT(decoded, 0);  // some edits (e.g. inside stored pixels) are harmless
}

TEST(PngTest, BadSignatureAndCrc) {
  Bytes f = small_valid_png();
  Bytes g = f;
  g[1] = 'Q';
  expect_error(g, "signature");
  expect_error(Bytes{137, 'P', 'N'}, "too short");
  g = f;
  g[8 + 8 + 13] ^= 0xff;  // IHDR's CRC
  expect_error(g, "CRC");
}

TEST(PngTest, HugeDeclaredSizesAreRefused) {
  const Bytes tiny_idat = chunk("IDAT", zlib_compress(Bytes{0, 0}));
  expect_error(png_file({ihdr(0x7fffffff, 0x7fffffff, 8, 6), tiny_idat, chunk("IEND", {})}), "larger than");
  expect_error(png_file({ihdr(0x80000000u, 1, 8, 0), tiny_idat, chunk("IEND", {})}), "invalid image size");
  expect_error(png_file({ihdr(0, 5, 8, 0), tiny_idat, chunk("IEND", {})}), "invalid image size");
  // Under the size cap, but the data is far too short: caught without allocating the image.
  expect_error(png_file({ihdr(16000, 16000, 8, 0), tiny_idat, chunk("IEND", {})}), "inflates to 2 bytes");
  // A chunk claiming more bytes than the file has.
  Bytes f = png_file({ihdr(1, 1, 8, 0)});
  be32(f, 0x7ffffff0u);
  f.insert(f.end(), {'I', 'D', 'A', 'T', 0, 0, 0, 0, 0, 0, 0, 0});
  expect_error(f, "remain");
  Bytes g = png_file({ihdr(1, 1, 8, 0)});
  be32(g, 0xffffffffu);
  g.insert(g.end(), {'I', 'D', 'A', 'T', 0, 0, 0, 0});
  expect_error(g, "remain");
}

TEST(PngTest, BadHeaderFieldsAreRefused) {
  const Bytes idat = chunk("IDAT", zlib_compress(Bytes{0, 0}));
  const Bytes iend = chunk("IEND", {});
  expect_error(png_file({ihdr(1, 1, 3, 0), idat, iend}), "bit depth");
  expect_error(png_file({ihdr(1, 1, 16, 3), idat, iend}), "bit depth");
  expect_error(png_file({ihdr(1, 1, 4, 2), idat, iend}), "bit depth");
  expect_error(png_file({ihdr(1, 1, 8, 5), idat, iend}), "color type");
  expect_error(png_file({ihdr(1, 1, 8, 0, 2), idat, iend}), "interlace");
  Bytes h = ihdr(1, 1, 8, 0);
  Bytes d(h.begin() + 8, h.end() - 4);
  d[10] = 1;
  expect_error(png_file({chunk("IHDR", d), idat, iend}), "compression method");
  d[10] = 0;
  d[11] = 1;
  expect_error(png_file({chunk("IHDR", d), idat, iend}), "filter method");
  d.pop_back();
  expect_error(png_file({chunk("IHDR", d), idat, iend}), "IHDR has length 12");
  expect_error(png_file({idat, ihdr(1, 1, 8, 0), iend}), "expected IHDR");
  expect_error(png_file({ihdr(1, 1, 8, 0), ihdr(1, 1, 8, 0), idat, iend}), "more than one IHDR");
}

TEST(PngTest, StructuralErrorsAreRefused) {
  const Bytes iend = chunk("IEND", {});
  // A 1 x 2 gray image: two rows of (filter byte 0, one pixel).
  const Bytes gray_idat = chunk("IDAT", zlib_compress(Bytes{0, 7, 0, 8}));
  EXPECT_EQ(decode(png_file({ihdr(1, 2, 8, 0), gray_idat, iend})).pixels, (Bytes{7, 8}));
  expect_error(png_file({ihdr(1, 2, 8, 0), iend}), "no IDAT");
  expect_error(png_file({ihdr(1, 2, 8, 0), gray_idat}), "before the IEND chunk");
  expect_error(png_file({ihdr(1, 2, 8, 0), gray_idat, chunk("IEND", {0})}), "IEND has length");
  expect_error(png_file({ihdr(1, 2, 8, 0), chunk("IDAT", zlib_compress(Bytes{0, 7, 5, 8})), iend}),
               "invalid filter type 5");
  expect_error(png_file({ihdr(1, 2, 8, 0), chunk("IDAT", zlib_compress(Bytes{0, 7, 0})), iend}), "inflates to 3 bytes");
  expect_error(png_file({ihdr(1, 2, 8, 0), chunk("IDAT", zlib_compress(Bytes{0, 7, 0, 8, 0})), iend}),
               "more than the expected");
  Bytes z = zlib_compress(Bytes{0, 7, 0, 8});
  Bytes z_plus = z;
  z_plus.push_back(0);
  expect_error(png_file({ihdr(1, 2, 8, 0), chunk("IDAT", z_plus), iend}), "extra data");
  Bytes z_bad = z;
  z_bad.back() ^= 1;  // Adler-32 of the zlib stream
  expect_error(png_file({ihdr(1, 2, 8, 0), chunk("IDAT", z_bad), iend}), "corrupt compressed");
  Bytes half1(z.begin(), z.begin() + 4), half2(z.begin() + 4, z.end());
  expect_error(png_file({ihdr(1, 2, 8, 0), chunk("IDAT", half1), iend}), "ends early");
  EXPECT_NO_THROW(decode(png_file({ihdr(1, 2, 8, 0), chunk("IDAT", half1), chunk("IDAT", half2), iend})));
  expect_error(png_file({ihdr(1, 2, 8, 0), chunk("IDAT", half1), chunk("tEXt", {'k', 0}), chunk("IDAT", half2), iend}),
               "not consecutive");
  expect_error(png_file({ihdr(1, 2, 8, 0), chunk("ABCD", {}), gray_idat, iend}), "unknown critical chunk");
  Bytes bad_type = chunk("IEND", {});
  bad_type[5] = '1';
  expect_error(png_file({ihdr(1, 2, 8, 0), gray_idat, bad_type}), "invalid chunk type");

  // Palette rules.
  const Bytes pal_idat = chunk("IDAT", zlib_compress(Bytes{0, 1, 0, 2}));
  const Bytes plte = chunk("PLTE", {1, 1, 1, 2, 2, 2, 3, 3, 3});
  EXPECT_EQ(decode(png_file({ihdr(1, 2, 8, 3), plte, pal_idat, iend})).pixels, (Bytes{2, 2, 2, 3, 3, 3}));
  expect_error(png_file({ihdr(1, 2, 8, 3), pal_idat, iend}), "no PLTE");
  expect_error(png_file({ihdr(1, 2, 8, 3), chunk("PLTE", {1, 1, 1, 2, 2, 2}), pal_idat, iend}), "palette index 2");
  expect_error(png_file({ihdr(1, 2, 8, 3), chunk("PLTE", {1, 1, 1, 2}), pal_idat, iend}), "PLTE has length");
  expect_error(png_file({ihdr(1, 2, 1, 3), plte, pal_idat, iend}), "entries");
  expect_error(png_file({ihdr(1, 2, 8, 3), plte, plte, pal_idat, iend}), "more than one PLTE");
  expect_error(png_file({ihdr(1, 2, 8, 0), plte, gray_idat, iend}), "grayscale");
  expect_error(png_file({ihdr(1, 2, 8, 3), plte, chunk("tRNS", {1, 2, 3, 4}), pal_idat, iend}), "tRNS has 4");
  expect_error(png_file({ihdr(1, 2, 8, 3), chunk("tRNS", {1}), plte, pal_idat, iend}), "tRNS chunk before PLTE");
  expect_error(png_file({ihdr(1, 2, 8, 6), chunk("tRNS", {1}), gray_idat, iend}), "already has alpha");
  expect_error(png_file({ihdr(1, 2, 8, 0), chunk("tRNS", {1}), gray_idat, iend}), "expected 2");
}

// ---- colormap and image helpers ------------------------------------------------------------

// OKLab lightness of an 8-bit sRGB colour (the forward transform, written independently of
// the inverse that the colormap uses).
double oklab_lightness(const std::array<uint8_t, 3>& c) {
  double lin[3];
  for (int i = 0; i < 3; ++i) {
    double v = c[i] / 255.0;
    lin[i] = v <= 0.04045 ? v / 12.92 : std::pow((v + 0.055) / 1.055, 2.4);
  }
  double l = std::cbrt(0.4122214708 * lin[0] + 0.5363325363 * lin[1] + 0.0514459929 * lin[2]);
  double m = std::cbrt(0.2119034982 * lin[0] + 0.6806995451 * lin[1] + 0.1073969566 * lin[2]);
  double s = std::cbrt(0.0883024619 * lin[0] + 0.2817188376 * lin[1] + 0.6299787005 * lin[2]);
  return 0.2104542553 * l + 0.7936177850 * m - 0.0040720468 * s;
}

TEST(ColormapTest, LightnessRisesMonotonically) {
  double prev = -1;
  for (int i = 0; i <= 1000; ++i) {
    double L = oklab_lightness(colormap(i / 1000.0));
    // 8-bit rounding can wobble lightness by a hair between neighbouring entries.
    EXPECT_GT(L, prev - 2e-3) << "t = " << i / 1000.0;
    if (i % 50 == 0 && i > 0) {
      EXPECT_GT(L, oklab_lightness(colormap((i - 50) / 1000.0)) + 0.02);
    }
    prev = std::max(prev, L);
  }
  double L0 = oklab_lightness(colormap(0)), L1 = oklab_lightness(colormap(1));
  EXPECT_LT(L0, 0.35);
  EXPECT_GT(L1, 0.85);
}

TEST(ColormapTest, EndsAndSpecialValues) {
  auto lo = colormap(0), hi = colormap(1);
  EXPECT_GT(lo[2], lo[1]);  // dark blue-purple: blue dominates green
  EXPECT_GT(hi[0], 200);    // yellow: red and green high, blue low
  EXPECT_GT(hi[1], 200);
  EXPECT_LT(hi[2], 150);
  auto mid = colormap(0.5);
  EXPECT_GT(mid[1], mid[0]);  // teal
  EXPECT_EQ(colormap(-3), lo);
  EXPECT_EQ(colormap(42), hi);
  EXPECT_EQ(colormap(-INFINITY), lo);
  EXPECT_EQ(colormap(INFINITY), hi);
  EXPECT_EQ(colormap(NAN), (std::array<uint8_t, 3>{128, 128, 128}));
}

std::array<uint8_t, 3> pixel(const Image& img, int x, int y) {
  size_t p = (size_t(y) * img.width + x) * 3;
  return {img.pixels[p], img.pixels[p + 1], img.pixels[p + 2]};
}

TEST(ColormapTest, HeatmapShapeRangeAndSpecialValues) {
  std::vector<double> v(5 * 3);
  for (size_t i = 0; i < v.size(); ++i) v[i] = double(i);
  Image img = heatmap(v, 5, 3);
  EXPECT_EQ(img.width, 5);
  EXPECT_EQ(img.height, 3);
  EXPECT_EQ(img.channels, 3);
  EXPECT_EQ(img.pixels.size(), 45u);
  EXPECT_EQ(pixel(img, 0, 0), colormap(0));  // row 0 is the top
  EXPECT_EQ(pixel(img, 4, 2), colormap(1));
  EXPECT_EQ(pixel(img, 2, 1), colormap(0.5));

  EXPECT_EQ(pixel(heatmap(std::vector<double>(4, 3.0), 2, 2), 1, 1), colormap(0.5));
  Image special = heatmap({1, NAN, 3, INFINITY}, 2, 2);
  EXPECT_EQ(pixel(special, 0, 0), colormap(0));
  EXPECT_EQ(pixel(special, 1, 0), colormap(NAN));
  EXPECT_EQ(pixel(special, 0, 1), colormap(1));
  EXPECT_EQ(pixel(special, 1, 1), colormap(NAN));

  Image logimg = heatmap({1, 10, 100, 0}, 4, 1, /*log_scale=*/true);
  EXPECT_EQ(pixel(logimg, 1, 0), colormap(0.5));
  EXPECT_EQ(pixel(logimg, 2, 0), colormap(1));
  EXPECT_EQ(pixel(logimg, 3, 0), colormap(0));

  EXPECT_THROW(heatmap(v, 4, 3), ember::Error);
  EXPECT_THROW(heatmap({}, 0, 0), ember::Error);
}

TEST(ColormapTest, ScatterHistogramBinsAndOrientation) {
  // 9 points near (xmin, ymax): the top-left pixel; 1 point near (xmax, ymin): bottom-right.
  std::vector<double> xy;
  for (int i = 0; i < 9; ++i) xy.insert(xy.end(), {-0.99, 0.99});
  xy.insert(xy.end(), {1.0, -1.0});                       // closed upper x edge, lower y edge
  xy.insert(xy.end(), {5.0, 0.0, 0.0, NAN, -2.0, 0.0});  // outside or NaN: dropped
  Image img = scatter_histogram(xy, -1, 1, -1, 1, 8, 6);
  EXPECT_EQ(img.width, 8);
  EXPECT_EQ(img.height, 6);
  EXPECT_EQ(pixel(img, 0, 0), colormap(1));
  EXPECT_EQ(pixel(img, 7, 5), colormap(std::log(2.0) / std::log(10.0)));
  EXPECT_EQ(pixel(img, 3, 3), colormap(0));
  Image empty = scatter_histogram({}, 0, 1, 0, 1, 3, 2);
  EXPECT_EQ(pixel(empty, 2, 1), colormap(0));
  EXPECT_THROW(scatter_histogram({1.0}, 0, 1, 0, 1, 3, 2), ember::Error);
  EXPECT_THROW(scatter_histogram({}, 1, 1, 0, 1, 3, 2), ember::Error);
  EXPECT_THROW(scatter_histogram({}, 0, 1, 0, NAN, 3, 2), ember::Error);
  EXPECT_THROW(scatter_histogram({}, 0, 1, 0, 1, 0, 2), ember::Error);
}

TEST(ColormapTest, ImageGridLayoutAndScaling) {
  const int n = 5, c = 3, h = 4, w = 3;
  std::vector<float> batch(size_t(n) * c * h * w);
  // Image i, channel k holds the constant (i + 1) / 10 + k / 100, except one out-of-range
  // value that must be clamped.
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < c; ++k)
      for (int p = 0; p < h * w; ++p) batch[(size_t(i) * c + k) * h * w + p] = (i + 1) / 10.0f + k / 100.0f;
  batch[0] = 7.0f;
  Image g = image_grid(batch, n, c, h, w, /*nrow=*/2, /*minus_one_to_one=*/false);
  EXPECT_EQ(g.channels, 3);
  EXPECT_EQ(g.width, 2 * (w + 2) + 2);   // 2 columns
  EXPECT_EQ(g.height, 3 * (h + 2) + 2);  // 3 rows, the last half full
  auto at = [&](int x, int y, int k) { return int(g.pixels[(size_t(y) * g.width + x) * 3 + k]); };
  EXPECT_EQ(at(0, 0, 0), 0);  // padding
  EXPECT_EQ(at(2, 2, 0), 255);  // clamped 7.0
  EXPECT_EQ(at(3, 2, 0), int(0.1f * 255 + 0.5f));
  EXPECT_EQ(at(3, 2, 2), int(0.12f * 255 + 0.5f));
  EXPECT_EQ(at(2 + w + 2, 2, 0), int(0.2f * 255 + 0.5f));   // image 1: row 0, column 1
  EXPECT_EQ(at(2, 2 + 2 * (h + 2), 1), int(0.51f * 255 + 0.5f));  // image 4: row 2, column 0
  EXPECT_EQ(at(2 + w + 2, 2 + 2 * (h + 2), 0), 0);            // the empty cell stays black

  Image gray = image_grid({-1.0f, 0.0f, 1.0f, NAN}, 1, 1, 2, 2, 8, /*minus_one_to_one=*/true, /*padding=*/0);
  EXPECT_EQ(gray.width, 2);
  EXPECT_EQ(gray.height, 2);
  EXPECT_EQ(gray.channels, 1);
  EXPECT_EQ(gray.pixels, (Bytes{0, 128, 255, 0}));

  EXPECT_THROW(image_grid(batch, n, c, h, w + 1, 2, false), ember::Error);
  EXPECT_THROW(image_grid(batch, n, 2, h, w, 2, false), ember::Error);
  EXPECT_THROW(image_grid(batch, n, c, h, w, 0, false), ember::Error);
  EXPECT_THROW(image_grid(batch, n, c, h, w, 2, false, -1), ember::Error);
}

TEST(ColormapTest, HeatmapEncodesAsPng) {
  std::vector<double> v(31 * 17);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.1 * double(i));
  Image img = heatmap(v, 31, 17);
  EXPECT_EQ(decode(encode_png(img)).pixels, img.pixels);
}

}  // namespace
}  // namespace ember::data
