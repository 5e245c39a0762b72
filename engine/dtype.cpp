#include "ember/engine/dtype.h"

#include "ember/engine/device.h"
#include "ember/engine/error.h"

namespace ember {

// Floats win over integers; the wider float wins; f16 with bf16 meets in f32. Among integers
// the wider wins; bool is the weakest.
DType promote_types(DType a, DType b) {
  if (a == b) return a;
  auto rank_float = [](DType t) { return t == DType::f64 ? 3 : t == DType::f32 ? 2 : (t == DType::bf16 || t == DType::f16) ? 1 : 0; };
  int fa = rank_float(a), fb = rank_float(b);
  if (fa || fb) {
    if (fa == 1 && fb == 1) return DType::f32;  // bf16 with f16
    if (fa >= fb) return a;
    return b;
  }
  auto rank_int = [](DType t) { return t == DType::i64 ? 4 : t == DType::i32 ? 3 : t == DType::u8 ? 2 : 1; };
  return rank_int(a) >= rank_int(b) ? a : b;
}

Device Device::parse(const std::string& s) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda") return Device::cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    try {
      size_t used = 0;
      int i = std::stoi(s.substr(5), &used);
      if (used == s.size() - 5 && i >= 0) return Device::cuda(i);
    } catch (const std::exception&) {
    }
  }
  EMBER_FAIL("device '", s, "' not understood: use cpu, cuda or cuda:N");
}

}  // namespace ember
