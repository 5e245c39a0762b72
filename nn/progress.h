// Progress on long work: one self-overwriting line (step/total, loss, it/s, ETA) on a
// terminal, a plain line every few seconds otherwise; and metrics.jsonl, one JSON object per
// line, flushed as written so a crash loses nothing already logged.
#pragma once
#include <chrono>
#include <cstdio>
#include <map>
#include <string>

namespace ember::nn {

class Progress {
 public:
  Progress(std::string label, int64_t total, int64_t start = 0);
  // `extra` is appended to the line (e.g. "kl 0.123").
  void update(int64_t step, double loss, const std::string& extra = "");
  void finish();

 private:
  std::string label_;
  int64_t total_, start_;
  bool tty_;
  std::chrono::steady_clock::time_point t0_, last_;
};

class MetricsLog {
 public:
  MetricsLog() = default;
  explicit MetricsLog(const std::string& path, bool append = false);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  // Writes {"key": value, ...} with numbers as numbers and the string fields quoted.
  void write(const std::map<std::string, double>& numbers, const std::map<std::string, std::string>& strings = {});

 private:
  FILE* f_ = nullptr;
};

std::string json_escape(const std::string& s);

}  // namespace ember::nn
