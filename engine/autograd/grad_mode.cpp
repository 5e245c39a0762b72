#include "ember/engine/autograd/grad_mode.h"

namespace ember {

// Per thread, like PyTorch: a data-loader thread's NoGrad does not leak into training.
static thread_local bool g_grad_enabled = true;

bool grad_enabled() { return g_grad_enabled; }
void set_grad_enabled(bool on) { g_grad_enabled = on; }

}  // namespace ember
