// PNG files in and out, on zlib alone. Run folders get their sample grids and density heat
// maps as PNG, and image data sets may be folders of PNGs, so the decoder reads files we did
// not write: every malformed input is an ember::Error naming the file and the problem, never
// a crash, an out-of-bounds read or a huge allocation made on the word of a header.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ember::data {

// An 8-bit image: pixels are row-major, row 0 at the top, channels interleaved
// (1 = gray, 2 = gray + alpha, 3 = RGB, 4 = RGBA); pixels.size() == width * height * channels.
struct Image {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
};

// The bytes of a PNG file holding img (8 bits per sample, not interlaced). Throws
// ember::Error if img is empty, has another channel count, or pixels has the wrong size.
std::vector<uint8_t> encode_png(const Image& img);

// Writes encode_png(img) to path + ".tmp" and renames it over path, so a process that dies
// mid-write never leaves a truncated PNG under the real name.
void write_png(const std::string& path, const Image& img);

// Decodes a PNG held in memory. Accepted: gray, gray + alpha, RGB, RGBA at 8 or 16 bits,
// gray at 1/2/4 bits, palette at 1/2/4/8 bits; not interlaced (Adam7 is refused with a clear
// error). Output is always 8 bits per sample: 16-bit samples are rounded to 8 bits, low-depth
// gray is scaled to 0..255, a palette expands to RGB, and a tRNS chunk adds an alpha channel
// (gray -> gray + alpha, RGB and palette -> RGBA). name_for_errors goes into every message.
Image decode_png(const uint8_t* bytes, size_t size, const std::string& name_for_errors);

// Reads and decodes the file at path.
Image read_png(const std::string& path);

}  // namespace ember::data
