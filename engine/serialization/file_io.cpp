#include "ember/engine/serialization/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "ember/engine/error.h"

namespace ember::serialization {

std::vector<uint8_t> read_file(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  EMBER_CHECK(f, path, ": cannot open for reading (", std::strerror(errno), ")");
  std::vector<uint8_t> data;
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) data.insert(data.end(), buf, buf + n);
  bool err = std::ferror(f);
  std::fclose(f);
  EMBER_CHECK(!err, path, ": read error");
  return data;
}

void atomic_write_file(const std::string& path, const void* data, size_t size) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  EMBER_CHECK(fd >= 0, path, ": cannot create ", tmp, " (", std::strerror(errno), ")");
  const char* p = static_cast<const char*>(data);
  size_t left = size;
  while (left > 0) {
    ssize_t w = ::write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      EMBER_FAIL(path, ": write failed (", std::strerror(e), "); the previous file, if any, is untouched");
    }
    p += w;
    left -= static_cast<size_t>(w);
  }
  // The data must be on disk before the rename makes it the file.
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    EMBER_FAIL(path, ": flushing to disk failed (", std::strerror(errno), ")");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    EMBER_FAIL(path, ": rename from ", tmp, " failed (", std::strerror(e), ")");
  }
}

}  // namespace ember::serialization
