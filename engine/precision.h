// The precision of f32 matrix products and convolutions, PyTorch's
// set_float32_matmul_precision: `highest` computes in exact f32 (the default), `high` lets the
// GPU use TF32 tensor cores (inputs rounded to 10 mantissa bits), `medium` BF16 tensor cores
// (8 bits); accumulation stays f32. The CPU always computes exactly; f64 ignores the setting.
#pragma once
#include <string>

namespace ember {

enum class MatmulPrecision { highest, high, medium };

void set_matmul_precision(MatmulPrecision p);
MatmulPrecision matmul_precision();
// "highest" | "high" | "medium"; anything else is an ember::Error naming the three.
MatmulPrecision parse_matmul_precision(const std::string& s);
const char* precision_name(MatmulPrecision p);

// Under `medium`, whether the conv and attention backwards keep BF16 copies of the activations
// they read only as BF16 operands (autograd/narrow_saved.h). On by default: the same gradients
// from half the memory for those tensors. Off keeps them f32 and saves the two conversions
// each copy costs (one in the forward, one in the backward).
void set_bf16_saved_activations(bool on);
bool bf16_saved_activations();

}  // namespace ember
