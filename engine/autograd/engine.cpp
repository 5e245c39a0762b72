// The backward walker.
//
// 1. Collect the graph reachable from the roots and count, for every node, the edges that
//    point into it (its dependencies). In `grad` mode, keep only the nodes from which an input
//    we differentiate can be reached: the rest of the graph is never run.
// 2. Seed the roots' input buffers with the output gradients, and run ready nodes (all
//    dependencies delivered) from a max-heap on sequence number, so the latest op goes first.
// 3. Running a node: fill the gradients its outputs did not receive with zeros, call its
//    backward (grad mode = create_graph, so with create_graph the backward records its own
//    graph) telling it which input gradients the walk uses (autograd::needs_input_grad), then
//    add each returned gradient into the buffer of the node it flows to.
// 4. Without retain_graph a node releases its closure and saved tensors once run, and a second
//    walk through it is an error that says what to do.
#include "ember/engine/autograd/engine.h"

#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/autograd/node.h"
#include "ember/engine/factory.h"
#include "ember/ops/elementwise.h"

namespace ember {

namespace autograd {
// The upward call the layering allows (DESIGN.md, "Layers"): gradients meet through `add`,
// which records itself under create_graph, so accumulated gradients stay differentiable.
Tensor accumulate_gradients(const Tensor& a, const Tensor& b) { return add(a, b); }
}  // namespace autograd

using autograd::Edge;
using autograd::Node;

namespace {

struct Capture {
  Node* node;
  uint32_t slot;
};

struct ByLatest {
  bool operator()(const Node* a, const Node* b) const { return a->sequence_nr() < b->sequence_nr(); }
};

bool is_sink_in_grad_mode(bool is_sink, bool capture_mode) { return is_sink && capture_mode; }

std::string shapes_of(const std::vector<Shape>& shapes) {
  std::string s;
  for (size_t i = 0; i < shapes.size(); ++i) s += (i ? ", " : "") + shape_str(shapes[i]);
  return s;
}

// Runs the walk. With `captures` non-empty, returns the gradient arriving at each capture
// point and leaves .grad alone; otherwise accumulates into leaves.
TensorList run_backward(const TensorList& roots, const TensorList& root_grads, bool keep_graph, bool create_graph,
                        const std::vector<Capture>& captures) {
  const bool capture_mode = !captures.empty();
  std::vector<Edge> root_edges;
  for (const auto& r : roots) root_edges.push_back(autograd::gradient_edge(r));

  // --- 1. discover the graph (iterative DFS), then prune to what the captures need ---
  std::unordered_map<Node*, std::vector<Node*>> children;  // reachable nodes -> next nodes
  std::vector<Node*> order;                                // discovery order
  {
    std::vector<Node*> stack;
    for (const auto& e : root_edges)
      if (e.valid() && !children.count(e.node.get())) {
        children[e.node.get()];
        stack.push_back(e.node.get());
      }
    while (!stack.empty()) {
      Node* n = stack.back();
      stack.pop_back();
      order.push_back(n);
      for (const auto& e : n->next_edges()) {
        if (!e.valid()) continue;
        children[n].push_back(e.node.get());
        if (!children.count(e.node.get())) {
          children[e.node.get()];
          stack.push_back(e.node.get());
        }
      }
    }
  }
  std::unordered_set<Node*> needed;
  if (capture_mode) {
    // A node is needed when a capture point is at it or below it. Reverse topological order
    // is not known yet, so iterate to a fixed point (graphs here are small; each pass is linear).
    for (const auto& c : captures) needed.insert(c.node);
    bool changed = true;
    while (changed) {
      changed = false;
      for (Node* n : order) {
        if (needed.count(n)) continue;
        for (Node* c : children[n])
          if (needed.count(c)) {
            needed.insert(n);
            changed = true;
            break;
          }
      }
    }
  }
  auto active = [&](Node* n) { return !capture_mode || needed.count(n); };
  std::unordered_map<Node*, int> deps;
  for (Node* n : order) {
    if (!active(n)) continue;
    for (Node* c : children[n])
      if (active(c)) ++deps[c];
  }

  // --- 2. seed ---
  std::unordered_map<Node*, TensorList> buffers;
  auto deliver = [&](Node* n, uint32_t slot, const Tensor& g) {
    auto& buf = buffers[n];
    if (buf.empty()) buf.resize(n->num_outputs());
    buf[slot] = buf[slot].defined() ? autograd::accumulate_gradients(buf[slot], g) : g;
  };
  for (size_t i = 0; i < roots.size(); ++i) {
    if (!root_edges[i].valid() || !active(root_edges[i].node.get())) continue;
    deliver(root_edges[i].node.get(), root_edges[i].input_nr, root_grads[i]);
  }
  std::priority_queue<Node*, std::vector<Node*>, ByLatest> ready;
  std::unordered_set<Node*> queued;
  for (const auto& e : root_edges) {
    Node* n = e.node.get();
    if (n && active(n) && deps[n] == 0 && !queued.count(n)) {
      ready.push(n);
      queued.insert(n);
    }
  }

  std::vector<Tensor> captured(captures.size());
  GradModeGuard mode(create_graph);

  // --- 3. run ---
  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    TensorList grads = std::move(buffers[n]);
    buffers.erase(n);
    if (grads.empty()) grads.resize(n->num_outputs());
    for (size_t c = 0; c < captures.size(); ++c)
      if (captures[c].node == n) captured[c] = grads[captures[c].slot];

    bool any = false;
    for (const auto& g : grads) any = any || g.defined();
    const bool is_sink = dynamic_cast<autograd::AccumulateGrad*>(n) != nullptr;
    // In grad mode a node whose gradient only feeds a capture point has nothing left to do.
    bool feeds_needed = !capture_mode;
    for (Node* c : children[n]) feeds_needed = feeds_needed || needed.count(c);
    TensorList results;
    if (any && !is_sink_in_grad_mode(is_sink, capture_mode) && feeds_needed) {
      const auto& meta = n->output_meta();
      for (size_t i = 0; i < grads.size(); ++i) {
        if (!grads[i].defined()) {
          grads[i] = zeros(meta[i].sizes, {.dtype = meta[i].dtype, .device = meta[i].device});
        } else {
          EMBER_CHECK(grads[i].sizes() == meta[i].sizes, "backward of ", n->name(), ": gradient for output ", i,
                      " has shape ", shape_str(grads[i].sizes()), " but the output has shape ",
                      shape_str(meta[i].sizes));
        }
      }
      std::vector<bool> wanted(n->next_edges().size());
      for (size_t i = 0; i < wanted.size(); ++i) {
        Node* c = n->next_edges()[i].node.get();
        wanted[i] = c && active(c);
      }
      try {
        autograd::InputGradMask mask(&wanted);
        results = n->apply(grads);
      } catch (const Error& e) {
        std::string what = e.what();
        if (what.rfind(n->name(), 0) == 0) throw;  // already names the op
        EMBER_FAIL("in the backward of ", n->name(), " (inputs ", shapes_of(n->input_shapes()), "): ", what);
      }
      if (!keep_graph) n->release();
      if (!is_sink)
        EMBER_CHECK(results.size() == n->next_edges().size(), "backward of ", n->name(), " returned ", results.size(),
                    " gradients for ", n->next_edges().size(), " inputs");
    }
    const auto& edges = n->next_edges();
    for (size_t i = 0; i < edges.size(); ++i) {
      Node* c = edges[i].node.get();
      if (!c || !active(c)) continue;
      if (i < results.size() && results[i].defined()) {
        const Shape& want = n->input_shapes()[i];
        EMBER_CHECK(results[i].sizes() == want, "backward of ", n->name(), " returned a gradient of shape ",
                    shape_str(results[i].sizes()), " for input ", i, " of shape ", shape_str(want));
        deliver(c, edges[i].input_nr, results[i]);
      }
      if (--deps[c] == 0 && !queued.count(c)) {
        ready.push(c);
        queued.insert(c);
      }
    }
  }
  return captured;
}

TensorList root_gradients(const TensorList& outputs, const TensorList& grad_outputs, const char* op) {
  EMBER_CHECK(grad_outputs.empty() || grad_outputs.size() == outputs.size(), op, ": ", outputs.size(),
              " outputs but ", grad_outputs.size(), " grad_outputs");
  TensorList g(outputs.size());
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& o = outputs[i];
    EMBER_CHECK(o.defined(), op, ": output ", i, " is undefined");
    EMBER_CHECK(o.requires_grad(), op, ": output ", i, " (", o.str(),
                ") does not require grad and has no grad_fn: nothing it depends on requires grad, or it was "
                "computed under NoGrad");
    if (i < grad_outputs.size() && grad_outputs[i].defined()) {
      EMBER_CHECK(grad_outputs[i].sizes() == o.sizes(), op, ": grad_output ", i, " has shape ",
                  shape_str(grad_outputs[i].sizes()), " but output ", i, " has shape ", shape_str(o.sizes()));
      g[i] = grad_outputs[i];
    } else {
      EMBER_CHECK(o.numel() == 1, op, ": output ", i, " has shape ", shape_str(o.sizes()),
                  "; a gradient can be implied only for a one-element output. Pass grad_outputs (or call sum()).");
      g[i] = ones_like(o);
    }
  }
  return g;
}

}  // namespace

void backward(const TensorList& outputs, const TensorList& grad_outputs, bool retain_graph, bool create_graph) {
  TensorList g = root_gradients(outputs, grad_outputs, "backward");
  run_backward(outputs, g, retain_graph || create_graph, create_graph, {});
}

TensorList grad(const TensorList& outputs, const TensorList& inputs, const TensorList& grad_outputs, GradOptions opts) {
  TensorList g = root_gradients(outputs, grad_outputs, "grad");
  std::vector<Capture> captures;
  std::vector<Edge> keep;  // holds accumulators created here alive during the walk
  for (size_t j = 0; j < inputs.size(); ++j) {
    EMBER_CHECK(inputs[j].defined() && inputs[j].requires_grad(), "grad: input ", j, " (", inputs[j].str(),
                ") does not require grad; call requires_grad_() on it before computing the outputs");
    Edge e = autograd::gradient_edge(inputs[j]);
    keep.push_back(e);
    captures.push_back({e.node.get(), e.input_nr});
  }
  if (captures.empty()) return {};
  TensorList result = run_backward(outputs, g, opts.retain_graph || opts.create_graph, opts.create_graph, captures);
  for (size_t j = 0; j < inputs.size(); ++j) {
    if (!result[j].defined()) {
      EMBER_CHECK(opts.allow_unused, "grad: input ", j, " (", inputs[j].str(),
                  ") was not used to compute the outputs; pass allow_unused=true to get an undefined gradient");
    } else if (!opts.create_graph) {
      result[j] = result[j].detach();
    }
  }
  return result;
}

}  // namespace ember
