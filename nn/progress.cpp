#include "ember/nn/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstring>

#include "ember/engine/error.h"

namespace ember::nn {

Progress::Progress(std::string label, int64_t total, int64_t start)
    : label_(std::move(label)), total_(total), start_(start), tty_(::isatty(STDERR_FILENO)) {
  t0_ = last_ = std::chrono::steady_clock::now();
}

void Progress::update(int64_t step, double loss, const std::string& extra) {
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_).count();
  bool last = step >= total_;
  if (!last && since < (tty_ ? 0.2 : 5.0)) return;
  last_ = now;
  double el = std::chrono::duration<double>(now - t0_).count();
  double rate = el > 0 ? static_cast<double>(step - start_) / el : 0;
  double eta = rate > 0 ? static_cast<double>(total_ - step) / rate : 0;
  char line[512];
  std::snprintf(line, sizeof line, "%s %lld/%lld  loss %.5g  %.1f it/s  ETA %d:%02d  %s", label_.c_str(),
                static_cast<long long>(step), static_cast<long long>(total_), loss, rate, static_cast<int>(eta) / 60,
                static_cast<int>(eta) % 60, extra.c_str());
  if (tty_) std::fprintf(stderr, "\r%-110s", line);
  else std::fprintf(stderr, "%s\n", line);
  std::fflush(stderr);
}

void Progress::finish() {
  if (tty_) std::fprintf(stderr, "\n");
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += c;
    else if (c == '\n') o += "\\n";
    else if (static_cast<unsigned char>(c) < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else o += c;
  }
  return o;
}

MetricsLog::MetricsLog(const std::string& path, bool append) {
  f_ = std::fopen(path.c_str(), append ? "a" : "w");
  EMBER_CHECK(f_, path, ": cannot open for writing (", std::strerror(errno), ")");
}
MetricsLog::~MetricsLog() {
  if (f_) std::fclose(f_);
}

void MetricsLog::write(const std::map<std::string, double>& numbers, const std::map<std::string, std::string>& strings) {
  if (!f_) return;
  std::string line = "{";
  bool first = true;
  for (auto& [k, v] : strings) {
    line += (first ? "\"" : ", \"") + json_escape(k) + "\": \"" + json_escape(v) + "\"";
    first = false;
  }
  for (auto& [k, v] : numbers) {
    char b[64];
    if (std::isfinite(v)) std::snprintf(b, sizeof b, "%.10g", v);
    else std::snprintf(b, sizeof b, "null");
    line += (first ? "\"" : ", \"") + json_escape(k) + "\": " + b;
    first = false;
  }
  line += "}\n";
  std::fputs(line.c_str(), f_);
  std::fflush(f_);
}

}  // namespace ember::nn
