#include "ember/nn/data/png.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <system_error>

#include "ember/engine/error.h"

namespace ember::data {

namespace {

constexpr uint8_t kSignature[8] = {137, 'P', 'N', 'G', '\r', '\n', 26, '\n'};

// The PNG spec caps chunk lengths and image dimensions at 2^31 - 1.
constexpr uint32_t kMaxPngInt = 0x7fffffffu;

// The largest decoded image (output bytes) we accept. A header can claim 2^31 x 2^31 pixels
// in a 60-byte file; this bound (1 GiB, far above any image this project handles) keeps a
// hostile header from steering us into absurd sizes.
constexpr uint64_t kMaxDecodedBytes = uint64_t(1) << 30;

// The encoder splits compressed data into IDAT chunks of this size: any size is valid, and
// moderate chunks keep every chunk length far from the 2^31 - 1 cap.
constexpr size_t kIdatChunkBytes = size_t(1) << 20;

uint32_t load_be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

void append_be32(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(uint8_t(v >> 24));
  out.push_back(uint8_t(v >> 16));
  out.push_back(uint8_t(v >> 8));
  out.push_back(uint8_t(v));
}

// zlib's crc32 takes a 32-bit length; feed it in pieces so any size is safe.
uint32_t crc_of(const uint8_t* p, size_t n) {
  uLong crc = crc32(0L, Z_NULL, 0);
  while (n > 0) {
    uInt piece = uInt(std::min<size_t>(n, 1u << 30));
    crc = crc32(crc, p, piece);
    p += piece;
    n -= piece;
  }
  return uint32_t(crc);
}

// The Paeth predictor of the PNG spec: whichever of left, up, up-left is closest to
// left + up - upleft, ties broken in that order.
uint8_t paeth(int left, int up, int upleft) {
  int p = left + up - upleft;
  int pa = std::abs(p - left), pb = std::abs(p - up), pc = std::abs(p - upleft);
  if (pa <= pb && pa <= pc) return uint8_t(left);
  if (pb <= pc) return uint8_t(up);
  return uint8_t(upleft);
}

// ---- encoder ----------------------------------------------------------------------------

void append_chunk(std::vector<uint8_t>& out, const char (&type)[5], const uint8_t* data, size_t n) {
  append_be32(out, uint32_t(n));
  size_t crc_from = out.size();
  out.insert(out.end(), type, type + 4);
  if (n > 0) out.insert(out.end(), data, data + n);
  append_be32(out, crc_of(out.data() + crc_from, 4 + n));
}

// Filters one row with filter `type` into dst (bpp = bytes per pixel; prev is the row above,
// all zeros for the first row, as the spec defines).
void filter_row(int type, const uint8_t* cur, const uint8_t* prev, size_t n, size_t bpp, uint8_t* dst) {
  for (size_t i = 0; i < n; ++i) {
    int left = i >= bpp ? cur[i - bpp] : 0;
    int up = prev[i];
    int upleft = i >= bpp ? prev[i - bpp] : 0;
    int pred = 0;
    switch (type) {
      case 0: pred = 0; break;
      case 1: pred = left; break;
      case 2: pred = up; break;
      case 3: pred = (left + up) / 2; break;
      default: pred = paeth(left, up, upleft); break;
    }
    dst[i] = uint8_t(cur[i] - pred);
  }
}

// Sum of the residuals read as signed bytes: small residuals (near 0 or 255) deflate well.
// This is the heuristic the PNG spec itself recommends for choosing a filter per row.
uint64_t residual_cost(const uint8_t* p, size_t n) {
  uint64_t s = 0;
  for (size_t i = 0; i < n; ++i) s += uint64_t(std::abs(int(int8_t(p[i]))));
  return s;
}

std::vector<uint8_t> deflate_all(const std::vector<uint8_t>& in) {
  z_stream zs{};
  EMBER_CHECK(deflateInit(&zs, Z_DEFAULT_COMPRESSION) == Z_OK, "encode_png: zlib deflateInit failed");
  std::vector<uint8_t> out;
  std::array<uint8_t, 1 << 16> buf;
  size_t fed = 0;
  int ret = Z_OK;
  while (ret != Z_STREAM_END) {
    // Feed the input in pieces that fit zlib's 32-bit counters.
    if (zs.avail_in == 0 && fed < in.size()) {
      size_t piece = std::min<size_t>(in.size() - fed, 1u << 30);
      zs.next_in = const_cast<Bytef*>(in.data() + fed);
      zs.avail_in = uInt(piece);
      fed += piece;
    }
    zs.next_out = buf.data();
    zs.avail_out = uInt(buf.size());
    ret = deflate(&zs, fed == in.size() ? Z_FINISH : Z_NO_FLUSH);
    if (ret != Z_OK && ret != Z_STREAM_END && ret != Z_BUF_ERROR) {
      deflateEnd(&zs);
      EMBER_FAIL("encode_png: zlib deflate failed (code ", ret, ")");
    }
    out.insert(out.end(), buf.data(), buf.data() + (buf.size() - zs.avail_out));
  }
  deflateEnd(&zs);
  return out;
}

// ---- decoder ----------------------------------------------------------------------------

// Every decoder message starts with the file's name.
#define PNG_CHECK(cond, ...) EMBER_CHECK(cond, "png '", name, "': ", __VA_ARGS__)
#define PNG_FAIL(...) EMBER_FAIL("png '", name, "': ", __VA_ARGS__)

struct Header {
  uint32_t width = 0, height = 0;
  int bit_depth = 0, color_type = 0;
  int samples = 0;       // samples per pixel in the file
  int out_channels = 0;  // channels of the decoded 8-bit image
  size_t row_bytes = 0;  // bytes of one unfiltered row in the file
  size_t bpp = 0;        // filter distance: bytes per pixel, at least 1
};

// A chunk type is four ASCII letters; anything else means we lost track of the chunk
// boundaries, and printing it raw could spray control bytes into a log.
bool is_chunk_type(const uint8_t* t) {
  for (int i = 0; i < 4; ++i)
    if (!((t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= 'a' && t[i] <= 'z'))) return false;
  return true;
}

std::string printable_type(const uint8_t* t) {
  if (is_chunk_type(t)) return std::string(reinterpret_cast<const char*>(t), 4);
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%02x%02x%02x%02x", t[0], t[1], t[2], t[3]);
  return buf;
}

Header parse_ihdr(const uint8_t* d, uint32_t len, const std::string& name) {
  PNG_CHECK(len == 13, "IHDR has length ", len, ", expected 13");
  Header h;
  h.width = load_be32(d);
  h.height = load_be32(d + 4);
  h.bit_depth = d[8];
  h.color_type = d[9];
  int compression = d[10], filter = d[11], interlace = d[12];
  PNG_CHECK(h.width > 0 && h.height > 0 && h.width <= kMaxPngInt && h.height <= kMaxPngInt,
            "invalid image size ", h.width, " x ", h.height, " (each side must be 1 .. 2^31-1)");
  bool depth_ok = false;
  switch (h.color_type) {
    case 0: depth_ok = h.bit_depth == 1 || h.bit_depth == 2 || h.bit_depth == 4 || h.bit_depth == 8 || h.bit_depth == 16;
            h.samples = 1; break;
    case 2: depth_ok = h.bit_depth == 8 || h.bit_depth == 16; h.samples = 3; break;
    case 3: depth_ok = h.bit_depth == 1 || h.bit_depth == 2 || h.bit_depth == 4 || h.bit_depth == 8;
            h.samples = 1; break;
    case 4: depth_ok = h.bit_depth == 8 || h.bit_depth == 16; h.samples = 2; break;
    case 6: depth_ok = h.bit_depth == 8 || h.bit_depth == 16; h.samples = 4; break;
    default: PNG_FAIL("invalid color type ", h.color_type, " in IHDR (valid: 0, 2, 3, 4, 6)");
  }
  PNG_CHECK(depth_ok, "bit depth ", h.bit_depth, " is not allowed for color type ", h.color_type);
  PNG_CHECK(compression == 0, "unknown compression method ", compression, " in IHDR");
  PNG_CHECK(filter == 0, "unknown filter method ", filter, " in IHDR");
  PNG_CHECK(interlace == 0 || interlace == 1, "unknown interlace method ", interlace, " in IHDR");
  PNG_CHECK(interlace == 0, "interlaced (Adam7) PNGs are not supported; save the image without interlacing");

  // Palette images expand to RGB; tRNS may add alpha later (see decode_png).
  h.out_channels = h.color_type == 3 ? 3 : h.samples;
  // Both sides are below 2^31, so width * height fits 64 bits; once it is bounded by
  // kMaxDecodedBytes no product below can overflow either.
  uint64_t pixels = uint64_t(h.width) * h.height;
  PNG_CHECK(pixels * 4 <= kMaxDecodedBytes, "image of ", h.width, " x ", h.height,
            " pixels is larger than the decoder accepts (", kMaxDecodedBytes, " bytes)");
  uint64_t bits_per_pixel = uint64_t(h.samples) * h.bit_depth;
  h.row_bytes = size_t((uint64_t(h.width) * bits_per_pixel + 7) / 8);
  h.bpp = std::max<size_t>(1, size_t(bits_per_pixel / 8));
  return h;
}

// Inflates the concatenated IDAT payloads, which must hold one zlib stream of exactly
// `expected` bytes. The output buffer grows as data actually arrives rather than being
// sized from the header, so a small file claiming a huge image costs no huge allocation.
std::vector<uint8_t> inflate_idat(const std::vector<std::pair<const uint8_t*, size_t>>& parts, size_t expected,
                                  const std::string& name) {
  z_stream zs{};
  PNG_CHECK(inflateInit(&zs) == Z_OK, "zlib inflateInit failed");
  struct End {
    z_stream* zs;
    ~End() { inflateEnd(zs); }
  } end_guard{&zs};

  // One byte beyond `expected` lets us see a stream that is too long.
  const size_t cap = expected + 1;
  std::vector<uint8_t> out;
  size_t produced = 0;
  bool ended = false;

  auto inflate_step = [&]() -> int {
    if (produced == out.size()) {
      PNG_CHECK(out.size() < cap, "image data inflates to more than the expected ", expected, " bytes");
      out.resize(std::min(cap, std::max<size_t>(out.size() * 2, 1 << 16)));
    }
    zs.next_out = out.data() + produced;
    zs.avail_out = uInt(std::min<size_t>(out.size() - produced, UINT_MAX));
    uInt before = zs.avail_out;
    int ret = inflate(&zs, Z_NO_FLUSH);
    produced += before - zs.avail_out;
    if (ret == Z_STREAM_END) {
      ended = true;
    } else if (ret != Z_OK && ret != Z_BUF_ERROR) {
      PNG_FAIL("corrupt compressed image data (zlib: ", zs.msg ? zs.msg : "unknown error", ")");
    }
    return ret;
  };

  for (const auto& [data, size] : parts) {
    zs.next_in = const_cast<Bytef*>(data);
    zs.avail_in = uInt(size);  // a chunk is below 2^31 bytes
    while (zs.avail_in > 0) {
      PNG_CHECK(!ended, "extra data after the end of the compressed image data");
      inflate_step();
    }
  }
  // All input is in; inflate may still hold output it had no room for.
  while (!ended) {
    size_t before = produced;
    int ret = inflate_step();
    if (ret == Z_BUF_ERROR || (produced == before && !ended)) break;
  }
  PNG_CHECK(produced <= expected, "image data inflates to more than the expected ", expected, " bytes");
  PNG_CHECK(ended, "compressed image data ends early after ", produced, " of ", expected,
            " bytes (truncated or corrupt IDAT)");
  PNG_CHECK(produced == expected, "image data inflates to ", produced, " bytes, expected ", expected,
            " for the size in IHDR");
  out.resize(produced);
  return out;
}

// Reverses the per-row filters in place; each row is a filter byte then row_bytes bytes.
void unfilter(std::vector<uint8_t>& raw, const Header& h, const std::string& name) {
  const size_t n = h.row_bytes, bpp = h.bpp;
  const std::vector<uint8_t> zero_row(n, 0);
  const uint8_t* prev = zero_row.data();
  for (uint32_t y = 0; y < h.height; ++y) {
    uint8_t* row = raw.data() + size_t(y) * (n + 1);
    int type = row[0];
    uint8_t* cur = row + 1;
    switch (type) {
      case 0: break;
      case 1:
        for (size_t i = bpp; i < n; ++i) cur[i] = uint8_t(cur[i] + cur[i - bpp]);
        break;
      case 2:
        for (size_t i = 0; i < n; ++i) cur[i] = uint8_t(cur[i] + prev[i]);
        break;
      case 3:
        for (size_t i = 0; i < n; ++i) {
          int left = i >= bpp ? cur[i - bpp] : 0;
          cur[i] = uint8_t(cur[i] + (left + prev[i]) / 2);
        }
        break;
      case 4:
        for (size_t i = 0; i < n; ++i) {
          int left = i >= bpp ? cur[i - bpp] : 0;
          int upleft = i >= bpp ? prev[i - bpp] : 0;
          cur[i] = uint8_t(cur[i] + paeth(left, prev[i], upleft));
        }
        break;
      default: PNG_FAIL("row ", y, " has invalid filter type ", type, " (valid: 0..4)");
    }
    prev = cur;
  }
}

// Sample i of an unfiltered row, at its own depth (1, 2, 4, 8 or 16 bits, MSB first).
uint32_t sample_at(const uint8_t* row, size_t i, int depth) {
  if (depth == 8) return row[i];
  if (depth == 16) return (uint32_t(row[2 * i]) << 8) | row[2 * i + 1];
  size_t bit = i * size_t(depth);
  int shift = 8 - depth - int(bit % 8);
  return (row[bit / 8] >> shift) & ((1u << depth) - 1);
}

// A sample scaled to 8 bits: low depths stretch to the full range, 16 bits round.
uint8_t to8(uint32_t v, int depth) {
  if (depth == 8) return uint8_t(v);
  if (depth == 16) return uint8_t((v * 255 + 32767) / 65535);
  return uint8_t(v * 255 / ((1u << depth) - 1));
}

}  // namespace

std::vector<uint8_t> encode_png(const Image& img) {
  EMBER_CHECK(img.width > 0 && img.height > 0, "encode_png: image size must be positive, got ", img.width, " x ",
              img.height);
  EMBER_CHECK(img.channels >= 1 && img.channels <= 4, "encode_png: channels must be 1 (gray), 2 (gray+alpha), ",
              "3 (RGB) or 4 (RGBA), got ", img.channels);
  const size_t row = size_t(img.width) * size_t(img.channels);
  const uint64_t total = uint64_t(row) * uint64_t(img.height);
  EMBER_CHECK(img.pixels.size() == total, "encode_png: pixels has ", img.pixels.size(), " bytes, expected ",
              img.width, " x ", img.height, " x ", img.channels, " = ", total);

  // Filter each row with whichever of the five filters leaves the smallest residuals.
  std::vector<uint8_t> filtered((row + 1) * size_t(img.height));
  std::vector<uint8_t> zero_row(row, 0), trial(row);
  const size_t bpp = size_t(img.channels);
  for (int y = 0; y < img.height; ++y) {
    const uint8_t* cur = img.pixels.data() + size_t(y) * row;
    const uint8_t* prev = y > 0 ? cur - row : zero_row.data();
    uint8_t* dst = filtered.data() + size_t(y) * (row + 1);
    uint64_t best = UINT64_MAX;
    for (int type = 0; type <= 4; ++type) {
      filter_row(type, cur, prev, row, bpp, trial.data());
      uint64_t cost = residual_cost(trial.data(), row);
      if (cost < best) {
        best = cost;
        dst[0] = uint8_t(type);
        std::copy(trial.begin(), trial.end(), dst + 1);
      }
    }
  }
  std::vector<uint8_t> compressed = deflate_all(filtered);

  static constexpr uint8_t kColorType[5] = {0, 0, 4, 2, 6};  // indexed by channels
  std::vector<uint8_t> ihdr;
  append_be32(ihdr, uint32_t(img.width));
  append_be32(ihdr, uint32_t(img.height));
  ihdr.insert(ihdr.end(), {8, kColorType[img.channels], 0, 0, 0});  // depth, color, compression, filter, interlace

  std::vector<uint8_t> out(std::begin(kSignature), std::end(kSignature));
  out.reserve(compressed.size() + 64 + 12 * (compressed.size() / kIdatChunkBytes));
  append_chunk(out, "IHDR", ihdr.data(), ihdr.size());
  for (size_t off = 0; off < compressed.size(); off += kIdatChunkBytes)
    append_chunk(out, "IDAT", compressed.data() + off, std::min(kIdatChunkBytes, compressed.size() - off));
  append_chunk(out, "IEND", nullptr, 0);
  return out;
}

void write_png(const std::string& path, const Image& img) {
  std::vector<uint8_t> bytes = encode_png(img);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    EMBER_CHECK(f, "write_png: cannot open '", tmp, "' for writing (does the folder exist and is it writable?)");
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    f.close();
    if (!f) {
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
      EMBER_FAIL("write_png: writing ", bytes.size(), " bytes to '", tmp, "' failed (disk full?)");
    }
  }
  // Rename is atomic within a file system: readers see the old file or the whole new one.
  // (We do not fsync: this guards against a dying process, not against power loss.)
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    EMBER_FAIL("write_png: cannot rename '", tmp, "' to '", path, "': ", ec.message());
  }
}

Image decode_png(const uint8_t* bytes, size_t size, const std::string& name) {
  PNG_CHECK(bytes != nullptr || size == 0, "null data pointer");
  PNG_CHECK(size >= 8 && std::memcmp(bytes, kSignature, 8) == 0,
            size < 8 ? "file too short to be a PNG (" : "not a PNG file: bad signature (",
            size, " bytes)");

  // Pass 1: walk the chunks, checking each one's bounds and CRC and the order the spec
  // demands, and note where the compressed data lies.
  Header h;
  bool seen_ihdr = false, seen_plte = false, seen_trns = false, seen_idat = false, idat_done = false;
  std::vector<std::array<uint8_t, 4>> palette;  // RGB + alpha (255 unless tRNS says otherwise)
  int trns_gray = -1;                           // gray sample value that is transparent
  std::array<int, 3> trns_rgb{-1, -1, -1};      // RGB sample values that are transparent
  std::vector<std::pair<const uint8_t*, size_t>> idat;
  size_t pos = 8;
  for (;;) {
    PNG_CHECK(size - pos >= 12, "file truncated: ", size, " bytes end before the IEND chunk (the next chunk ",
              "would start at byte ", pos, ")");
    const uint32_t len = load_be32(bytes + pos);
    const uint8_t* type = bytes + pos + 4;
    const uint8_t* data = type + 4;
    PNG_CHECK(is_chunk_type(type), "invalid chunk type ", printable_type(type), " at byte ", pos,
              " (corrupt file?)");
    const std::string t = printable_type(type);
    PNG_CHECK(len <= kMaxPngInt && len <= size - pos - 12, "chunk ", t, " at byte ", pos, " declares ", len,
              " data bytes but only ", size - pos - 12, " remain (truncated file?)");
    const uint32_t stored_crc = load_be32(data + len);
    const uint32_t crc = crc_of(type, 4 + size_t(len));
    PNG_CHECK(crc == stored_crc, "CRC mismatch in chunk ", t, " at byte ", pos, " (corrupt file)");

    PNG_CHECK(seen_ihdr || t == "IHDR", "first chunk is ", t, ", expected IHDR");
    if (seen_idat && t != "IDAT") idat_done = true;
    if (t == "IHDR") {
      PNG_CHECK(!seen_ihdr, "more than one IHDR chunk");
      h = parse_ihdr(data, len, name);
      seen_ihdr = true;
    } else if (t == "PLTE") {
      PNG_CHECK(!seen_plte, "more than one PLTE chunk");
      PNG_CHECK(!seen_idat, "PLTE chunk after image data");
      PNG_CHECK(h.color_type != 0 && h.color_type != 4, "PLTE chunk in a grayscale image");
      PNG_CHECK(len % 3 == 0 && len >= 3 && len <= 768, "PLTE has length ", len,
                ", expected 3 x (1..256) entries");
      size_t entries = len / 3;
      if (h.color_type == 3)
        PNG_CHECK(entries <= (size_t(1) << h.bit_depth), "palette has ", entries, " entries, more than ",
                  h.bit_depth, "-bit indices can address");
      palette.resize(entries);
      for (size_t i = 0; i < entries; ++i) palette[i] = {data[3 * i], data[3 * i + 1], data[3 * i + 2], 255};
      seen_plte = true;
    } else if (t == "tRNS") {
      PNG_CHECK(!seen_trns, "more than one tRNS chunk");
      PNG_CHECK(!seen_idat, "tRNS chunk after image data");
      PNG_CHECK(h.color_type != 4 && h.color_type != 6, "tRNS chunk in an image that already has alpha");
      if (h.color_type == 3) {
        PNG_CHECK(seen_plte, "tRNS chunk before PLTE");
        PNG_CHECK(len <= palette.size(), "tRNS has ", len, " entries but the palette only ", palette.size());
        for (size_t i = 0; i < len; ++i) palette[i][3] = data[i];
      } else if (h.color_type == 0) {
        PNG_CHECK(len == 2, "tRNS for a gray image has length ", len, ", expected 2");
        trns_gray = (data[0] << 8) | data[1];
      } else {
        PNG_CHECK(len == 6, "tRNS for an RGB image has length ", len, ", expected 6");
        for (int c = 0; c < 3; ++c) trns_rgb[c] = (data[2 * c] << 8) | data[2 * c + 1];
      }
      seen_trns = true;
    } else if (t == "IDAT") {
      PNG_CHECK(!idat_done, "IDAT chunks are not consecutive");
      PNG_CHECK(h.color_type != 3 || seen_plte, "palette image has no PLTE chunk before its image data");
      if (len > 0) idat.emplace_back(data, len);
      seen_idat = true;
    } else if (t == "IEND") {
      PNG_CHECK(len == 0, "IEND has length ", len, ", expected 0");
      break;  // bytes after IEND are ignored, as other decoders do
    } else {
      // Bit 5 of the first letter (lower case) marks a chunk as safe to ignore.
      PNG_CHECK(type[0] & 0x20, "unknown critical chunk ", t, "; this decoder cannot read the image");
    }
    pos += 12 + size_t(len);
  }
  PNG_CHECK(seen_idat, "no IDAT chunk: the file holds no image data");

  // Pass 2: inflate, unfilter, and convert each row to 8-bit output.
  const size_t expected = size_t(h.height) * (h.row_bytes + 1);
  std::vector<uint8_t> raw = inflate_idat(idat, expected, name);
  unfilter(raw, h, name);

  const bool trns_alpha = seen_trns;
  Image img;
  img.width = int(h.width);
  img.height = int(h.height);
  img.channels = h.out_channels + (trns_alpha ? 1 : 0);
  img.pixels.resize(size_t(h.width) * h.height * size_t(img.channels));
  const int d = h.bit_depth;
  for (uint32_t y = 0; y < h.height; ++y) {
    const uint8_t* row = raw.data() + size_t(y) * (h.row_bytes + 1) + 1;
    uint8_t* out = img.pixels.data() + size_t(y) * h.width * size_t(img.channels);
    if (d == 8 && h.color_type != 3 && !trns_alpha) {  // the common case is a plain copy
      std::memcpy(out, row, h.row_bytes);
      continue;
    }
    for (uint32_t x = 0; x < h.width; ++x) {
      switch (h.color_type) {
        case 0: {
          uint32_t g = sample_at(row, x, d);
          *out++ = to8(g, d);
          if (trns_alpha) *out++ = int(g) == trns_gray ? 0 : 255;
          break;
        }
        case 2: {
          uint32_t r = sample_at(row, 3 * size_t(x), d), g = sample_at(row, 3 * size_t(x) + 1, d),
                   b = sample_at(row, 3 * size_t(x) + 2, d);
          *out++ = to8(r, d);
          *out++ = to8(g, d);
          *out++ = to8(b, d);
          if (trns_alpha)
            *out++ = (int(r) == trns_rgb[0] && int(g) == trns_rgb[1] && int(b) == trns_rgb[2]) ? 0 : 255;
          break;
        }
        case 3: {
          uint32_t i = sample_at(row, x, d);
          PNG_CHECK(i < palette.size(), "pixel (", x, ", ", y, ") uses palette index ", i, " but the palette has ",
                    palette.size(), " entries");
          for (int c = 0; c < img.channels; ++c) *out++ = palette[i][c];
          break;
        }
        default:  // gray + alpha, RGBA: every sample scales the same way
          for (int c = 0; c < h.samples; ++c) *out++ = to8(sample_at(row, size_t(x) * h.samples + c, d), d);
          break;
      }
    }
  }
  return img;
}

Image read_png(const std::string& path) {
  std::error_code ec;
  EMBER_CHECK(std::filesystem::is_regular_file(path, ec), "read_png: '", path, "' is not a readable file",
              ec ? " (" + ec.message() + ")" : std::string());
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  EMBER_CHECK(f, "read_png: cannot open '", path, "' (is it readable?)");
  std::streamoff n = f.tellg();
  EMBER_CHECK(n >= 0, "read_png: cannot determine the size of '", path, "'");
  std::vector<uint8_t> bytes(static_cast<size_t>(n));
  f.seekg(0);
  f.read(reinterpret_cast<char*>(bytes.data()), n);
  EMBER_CHECK(f && f.gcount() == n, "read_png: error while reading '", path, "'");
  return decode_png(bytes.data(), bytes.size(), path);
}

#undef PNG_CHECK
#undef PNG_FAIL

}  // namespace ember::data
