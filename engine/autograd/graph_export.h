// For study: the recorded graph as Graphviz DOT, and a trace of ops as they run.
#pragma once
#include <chrono>
#include <string>
#include <vector>

#include "ember/engine/tensor.h"

namespace ember {

// DOT text of the graph behind `roots` (one box per Node, leaves as ellipses).
std::string graph_to_dot(const TensorList& roots);

struct TraceEvent {
  std::string op;
  std::vector<Shape> input_shapes;
  Shape output_shape;
  DType dtype;
  Device device;
  double micros;
};

// While a TraceScope lives, every op entry point records a TraceEvent (op, shapes, dtype,
// device, wall time). Tracing costs one branch per op when off.
class TraceScope {
 public:
  TraceScope();
  ~TraceScope();
  std::vector<TraceEvent> events() const;
  std::string table() const;  // a readable table: op, shapes, dtype, device, microseconds
};

namespace trace {
bool enabled();
// The innermost op running on this thread (its OpTimer's name), or nullptr: lets a low-level
// error, such as host access to a GPU tensor, name the op it happened in.
const char* current_op();
// An RAII timer ops create at their entry; it records when tracing is on.
class OpTimer {
 public:
  OpTimer(const char* op, const TensorList& inputs);
  ~OpTimer();
  void set_output(const Tensor& out);
  // The op did nothing after all (a fused path that declined, its caller taking another): no event.
  void discard() { on_ = false; }

 private:
  const char* op_;
  const char* outer_op_;
  bool on_;
  std::vector<Shape> shapes_;
  Shape out_;
  DType dtype_ = DType::f32;
  Device device_;
  std::chrono::steady_clock::time_point start_;
};
}  // namespace trace

}  // namespace ember
