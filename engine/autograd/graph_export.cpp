#include "ember/engine/autograd/graph_export.h"

#include <cstdio>
#include <sstream>
#include <unordered_map>

#include "ember/engine/autograd/node.h"

namespace ember {

std::string graph_to_dot(const TensorList& roots) {
  std::ostringstream os;
  os << "digraph ember {\n  rankdir=BT;\n  node [fontname=\"monospace\", fontsize=10];\n";
  std::unordered_map<autograd::Node*, int> ids;
  std::vector<autograd::Node*> stack;
  auto id_of = [&](autograd::Node* n) {
    auto it = ids.find(n);
    if (it != ids.end()) return it->second;
    int id = static_cast<int>(ids.size());
    ids[n] = id;
    stack.push_back(n);
    if (auto* acc = dynamic_cast<autograd::AccumulateGrad*>(n)) {
      Tensor leaf = acc->leaf();
      os << "  n" << id << " [shape=ellipse, label=\"leaf " << (leaf.defined() ? leaf.str() : "(freed)") << "\"];\n";
    } else {
      std::string shapes;
      for (const auto& m : n->output_meta()) shapes.append(shapes.empty() ? "" : ", ").append(shape_str(m.sizes));
      os << "  n" << id << " [shape=box, label=\"" << n->name() << "\\n-> " << shapes << "\"];\n";
    }
    return id;
  };
  for (size_t i = 0; i < roots.size(); ++i) {
    auto e = autograd::gradient_edge(roots[i]);
    if (!e.valid()) continue;
    os << "  out" << i << " [shape=plaintext, label=\"output " << i << " " << roots[i].str() << "\"];\n";
    os << "  n" << id_of(e.node.get()) << " -> out" << i << ";\n";
  }
  while (!stack.empty()) {
    autograd::Node* n = stack.back();
    stack.pop_back();
    int me = ids[n];
    for (const auto& e : n->next_edges())
      if (e.valid()) os << "  n" << id_of(e.node.get()) << " -> n" << me << ";\n";
  }
  os << "}\n";
  return os.str();
}

namespace {
thread_local std::vector<TraceEvent>* g_trace = nullptr;
}

TraceScope::TraceScope() {
  EMBER_CHECK(g_trace == nullptr, "TraceScope: a trace is already running on this thread");
  g_trace = new std::vector<TraceEvent>();
}
TraceScope::~TraceScope() {
  delete g_trace;
  g_trace = nullptr;
}
std::vector<TraceEvent> TraceScope::events() const { return g_trace ? *g_trace : std::vector<TraceEvent>{}; }

std::string TraceScope::table() const {
  std::ostringstream os;
  char line[512];
  std::snprintf(line, sizeof line, "%-22s %-36s %-16s %-5s %-7s %10s\n", "op", "inputs", "output", "dtype", "device", "us");
  os << line;
  for (const auto& e : events()) {
    std::string ins;
    for (const auto& s : e.input_shapes) ins.append(ins.empty() ? "" : " ").append(shape_str(s));
    std::snprintf(line, sizeof line, "%-22s %-36s %-16s %-5s %-7s %10.1f\n", e.op.c_str(), ins.c_str(),
                  shape_str(e.output_shape).c_str(), dtype_name(e.dtype), e.device.str().c_str(), e.micros);
    os << line;
  }
  return os.str();
}

namespace trace {
bool enabled() { return g_trace != nullptr; }

namespace {
thread_local const char* t_current_op = nullptr;
}
const char* current_op() { return t_current_op; }

OpTimer::OpTimer(const char* op, const TensorList& inputs) : op_(op), outer_op_(t_current_op), on_(g_trace != nullptr) {
  t_current_op = op;
  if (!on_) return;
  for (const auto& t : inputs)
    if (t.defined()) {
      shapes_.push_back(t.sizes());
      dtype_ = t.dtype();
      device_ = t.device();
    }
  start_ = std::chrono::steady_clock::now();
}

void OpTimer::set_output(const Tensor& out) {
  if (on_ && out.defined()) {
    out_ = out.sizes();
    dtype_ = out.dtype();
    device_ = out.device();
  }
}

OpTimer::~OpTimer() {
  t_current_op = outer_op_;
  if (!on_ || !g_trace) return;
  double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start_).count();
  g_trace->push_back({op_, std::move(shapes_), out_, dtype_, device_, us});
}
}  // namespace trace

}  // namespace ember
