#include "ember/engine/precision.h"

#include <atomic>

#include "ember/engine/error.h"

namespace ember {

namespace {
std::atomic<MatmulPrecision> g_precision{MatmulPrecision::highest};
std::atomic<bool> g_bf16_saved{true};
}

void set_matmul_precision(MatmulPrecision p) { g_precision.store(p); }
MatmulPrecision matmul_precision() { return g_precision.load(); }

void set_bf16_saved_activations(bool on) { g_bf16_saved.store(on); }
bool bf16_saved_activations() { return g_bf16_saved.load(); }

MatmulPrecision parse_matmul_precision(const std::string& s) {
  if (s == "highest") return MatmulPrecision::highest;
  if (s == "high") return MatmulPrecision::high;
  if (s == "medium") return MatmulPrecision::medium;
  EMBER_FAIL("precision: expected highest (exact f32), high (TF32) or medium (BF16), got '", s, "'");
}

const char* precision_name(MatmulPrecision p) {
  switch (p) {
    case MatmulPrecision::highest: return "highest";
    case MatmulPrecision::high: return "high";
    case MatmulPrecision::medium: return "medium";
  }
  return "?";
}

}  // namespace ember
