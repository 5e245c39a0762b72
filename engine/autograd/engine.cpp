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
//    add each returned gradient into the buffer of the node it flows to. Without create_graph
//    the backward may add its gradient into the one already waiting there, or into a leaf's
//    .grad that the walk lends it (autograd::take_pending_grad), instead of an add after.
// 4. Without retain_graph a node releases its closure and saved tensors once run, and a second
//    walk through it is an error that says what to do.
#include "ember/engine/autograd/engine.h"

#include <queue>
#include <span>
#include <utility>
#include <vector>

#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/autograd/node.h"
#include "ember/engine/factory.h"
#include "ember/ops/elementwise.h"

namespace ember {

namespace autograd {
// The upward call the layering allows (DESIGN.md, "Layers"): gradients meet through `add`,
// which records itself under create_graph, so accumulated gradients stay differentiable.
Tensor accumulate_gradients(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor accumulate_gradients_in_place(Tensor waiting, const Tensor& g) { return add_into(std::move(waiting), g); }
}  // namespace autograd

using autograd::Edge;
using autograd::Node;

namespace {

struct Capture {
  Node* node;
  uint32_t slot;
};

bool is_sink_in_grad_mode(bool is_sink, bool capture_mode) { return is_sink && capture_mode; }

std::string shapes_of(const autograd::ShapeList& shapes) {
  std::string s;
  for (size_t i = 0; i < shapes.size(); ++i) s.append(i ? ", " : "").append(shape_str(shapes[i]));
  return s;
}

// A leaf's sink whose .grad the walk lent (AccumulateGrad::lendable_grad): `lent` while it waits
// in the sink's buffer for the node that brings the first gradient, `taken` once that node's
// closure took it and the buffer's gradient includes it.
enum class Lent : uint8_t { no, lent, taken };

// One reachable node's state during a walk. Nodes are numbered in discovery order and found
// by their number, so the walk hashes each node once (when discovered) instead of once per
// lookup in several maps; it runs once per backward and per grad, hundreds of nodes each.
struct WalkNode {
  explicit WalkNode(Node* n) : node(n), sink(dynamic_cast<autograd::AccumulateGrad*>(n)) {}
  Node* node;
  autograd::AccumulateGrad* sink;  // non-null for a leaf's accumulator
  uint32_t first_edge = 0;  // its edges' targets in WalkState::edge_target, in edge order
  int deps = 0;             // edges from active nodes not yet delivered
  bool needed = true;       // in grad mode: a capture point is at it or below it
  bool queued = false;
  Lent lent = Lent::no;
  TensorList buffer;        // the gradients arriving for its outputs
};

constexpr uint32_t kNoTarget = UINT32_MAX;

// Node -> its number in the walk. Open addressing with linear probing in one array, grown at
// half full: std::unordered_map allocated a list node per entry, hundreds per walk.
class NodeNumbers {
  struct Slot {
    Node* node = nullptr;
    uint32_t number = kNoTarget;
  };
  // The slot of `n`, or the empty one where it would go.
  template <typename Slots>
  static auto& probe(Slots& slots, Node* n) {
    const size_t mask = slots.size() - 1;  // a power of two
    const auto h = reinterpret_cast<uintptr_t>(n);
    size_t i = static_cast<size_t>((h >> 4) * 0x9E3779B97F4A7C15ull >> 20) & mask;
    while (slots[i].node && slots[i].node != n) i = (i + 1) & mask;
    return slots[i];
  }

 public:
  NodeNumbers() : slots_(512) {}
  // The number of `n`, given `next` if it is new; and whether it was.
  std::pair<uint32_t, bool> try_emplace(Node* n, uint32_t next) {
    if (2 * (used_ + 1) > slots_.size()) grow();
    Slot& s = probe(slots_, n);
    if (s.node) return {s.number, false};
    s = {n, next};
    ++used_;
    return {next, true};
  }
  uint32_t find(Node* n) const {  // kNoTarget when absent
    const Slot& s = probe(slots_, n);
    return s.node ? s.number : kNoTarget;
  }

 private:
  void grow() {
    std::vector<Slot> bigger(2 * slots_.size());
    for (const Slot& s : slots_)
      if (s.node) probe(bigger, s.node) = s;
    slots_ = std::move(bigger);
  }
  std::vector<Slot> slots_;
  size_t used_ = 0;
};

// Runs the walk. With `captures` non-empty, returns the gradient arriving at each capture
// point and leaves .grad alone; otherwise accumulates into leaves.
TensorList run_backward(const TensorList& roots, const TensorList& root_grads, bool keep_graph, bool create_graph,
                        const std::vector<Capture>& captures) {
  const bool capture_mode = !captures.empty();
  std::vector<Edge> root_edges;
  for (const auto& r : roots) root_edges.push_back(autograd::gradient_edge(r));

  // --- 1. discover the graph (iterative DFS), then prune to what the captures need ---
  std::vector<WalkNode> nodes;
  std::vector<uint32_t> edge_target;  // per node, per edge: the target's number, or kNoTarget
  NodeNumbers number;
  nodes.reserve(256);
  edge_target.reserve(512);
  {
    std::vector<uint32_t> stack;
    stack.reserve(64);
    auto visit = [&](Node* n) {
      const auto [i, fresh] = number.try_emplace(n, static_cast<uint32_t>(nodes.size()));
      if (fresh) {
        nodes.emplace_back(n);
        stack.push_back(i);
      }
      return i;
    };
    for (const auto& e : root_edges)
      if (e.valid()) visit(e.node.get());
    while (!stack.empty()) {
      const uint32_t i = stack.back();
      stack.pop_back();
      nodes[i].first_edge = static_cast<uint32_t>(edge_target.size());
      for (const auto& e : nodes[i].node->next_edges())
        edge_target.push_back(e.valid() ? visit(e.node.get()) : kNoTarget);
    }
  }
  auto targets = [&](const WalkNode& w) {  // the edges' targets of `w` (kNoTarget: none)
    const uint32_t* first = edge_target.data() + w.first_edge;
    return std::span<const uint32_t>(first, w.node->next_edges().size());
  };
  std::vector<uint32_t> capture_at(captures.size(), kNoTarget);
  for (size_t c = 0; c < captures.size(); ++c) capture_at[c] = number.find(captures[c].node);
  if (capture_mode) {
    // A node is needed when a capture point is at it or below it. Reverse topological order
    // is not known yet, so iterate to a fixed point (graphs here are small; each pass is linear;
    // targets were discovered after their sources, so the reverse order converges fast).
    for (auto& w : nodes) w.needed = false;
    for (uint32_t i : capture_at)
      if (i != kNoTarget) nodes[i].needed = true;
    bool changed = true;
    while (changed) {
      changed = false;
      for (size_t k = nodes.size(); k-- > 0;) {
        WalkNode& w = nodes[k];
        if (w.needed) continue;
        for (uint32_t t : targets(w))
          if (t != kNoTarget && nodes[t].needed) {
            w.needed = changed = true;
            break;
          }
      }
    }
  }
  for (const auto& w : nodes) {
    if (!w.needed) continue;
    for (uint32_t t : targets(w))
      if (t != kNoTarget && nodes[t].needed) ++nodes[t].deps;
  }

  // --- 2. seed ---
  // A second gradient for one slot is added to the first; without create_graph, in place when
  // no one else can see the waiting one (no new buffer, and a view stays a view).
  // A lent .grad that a closure took and returned as it was is private too: the leaf holds it.
  auto holds_leaf_grad = [&](const WalkNode& w, const Tensor& waiting) {
    return w.lent != Lent::no && w.sink->is_leaf_grad(waiting);
  };
  auto deliver = [&](uint32_t i, uint32_t slot, const Tensor& g) {
    auto& buf = nodes[i].buffer;
    if (buf.empty()) buf.resize(nodes[i].node->num_outputs());
    Tensor& waiting = buf[slot];
    if (!waiting.defined()) waiting = g;
    else if (!create_graph && (autograd::private_gradient(waiting) || holds_leaf_grad(nodes[i], waiting)))
      waiting = autograd::accumulate_gradients_in_place(std::move(waiting), g);
    else waiting = autograd::accumulate_gradients(waiting, g);
  };
  auto by_latest = [&](uint32_t a, uint32_t b) { return nodes[a].node->sequence_nr() < nodes[b].node->sequence_nr(); };
  std::priority_queue<uint32_t, std::vector<uint32_t>, decltype(by_latest)> ready(by_latest);
  for (size_t i = 0; i < roots.size(); ++i) {
    if (!root_edges[i].valid()) continue;
    const uint32_t n = number.find(root_edges[i].node.get());
    if (nodes[n].needed) deliver(n, root_edges[i].input_nr, root_grads[i]);
  }
  for (const auto& e : root_edges) {
    if (!e.valid()) continue;
    const uint32_t n = number.find(e.node.get());
    if (nodes[n].needed && nodes[n].deps == 0 && !nodes[n].queued) {
      ready.push(n);
      nodes[n].queued = true;
    }
  }

  TensorList captured(captures.size());
  GradModeGuard mode(create_graph);

  // --- 3. run ---
  std::vector<bool> wanted;
  std::vector<autograd::PendingGrad> pending;  // per input edge of the running node: its target's waiting gradient
  while (!ready.empty()) {
    const uint32_t i = ready.top();
    ready.pop();
    Node* n = nodes[i].node;
    TensorList grads = std::move(nodes[i].buffer);
    nodes[i].buffer = TensorList();
    if (grads.empty()) grads.resize(n->num_outputs());
    for (size_t c = 0; c < captures.size(); ++c)
      if (capture_at[c] == i) captured[c] = grads[captures[c].slot];

    bool any = false;
    for (const auto& g : grads) any = any || g.defined();
    const bool is_sink = nodes[i].sink != nullptr;
    // In grad mode a node whose gradient only feeds a capture point has nothing left to do.
    bool feeds_needed = !capture_mode;
    for (uint32_t t : targets(nodes[i])) feeds_needed = feeds_needed || (t != kNoTarget && nodes[t].needed);
    TensorList results;
    if (any && !is_sink_in_grad_mode(is_sink, capture_mode) && feeds_needed) {
      const auto& meta = n->output_meta();
      for (size_t k = 0; k < grads.size(); ++k) {
        if (!grads[k].defined()) {
          grads[k] = zeros(meta[k].sizes, {.dtype = meta[k].dtype, .device = meta[k].device});
        } else {
          EMBER_CHECK(grads[k].sizes() == meta[k].sizes, "backward of ", n->name(), ": gradient for output ", k,
                      " has shape ", shape_str(grads[k].sizes()), " but the output has shape ",
                      shape_str(meta[k].sizes));
        }
      }
      const auto edge_targets = targets(nodes[i]);
      wanted.assign(edge_targets.size(), false);
      for (size_t k = 0; k < wanted.size(); ++k)
        wanted[k] = edge_targets[k] != kNoTarget && nodes[edge_targets[k]].needed;
      // Without create_graph, a closure may add its gradient into one already waiting
      // (autograd::take_pending_grad), saving the add that would follow; where none waits yet
      // for a leaf whose .grad would take the gradient in place, into .grad itself (lent).
      // Under create_graph it may fold the waiting one into a recorded op instead
      // (take_pending_grad_recorded); nothing is lent there.
      pending.assign(edge_targets.size(), {});
      for (size_t k = 0; k < pending.size(); ++k) {
        const uint32_t t = edge_targets[k];
        if (!wanted[k]) continue;
        WalkNode& target = nodes[t];
        const uint32_t slot_nr = n->next_edges()[k].input_nr;
        if (!create_graph && target.sink && !capture_mode && target.lent == Lent::no &&
            (target.buffer.empty() || !target.buffer[slot_nr].defined())) {
          if (Tensor g = target.sink->lendable_grad(); g.defined()) {
            if (target.buffer.empty()) target.buffer.resize(target.node->num_outputs());
            target.buffer[slot_nr] = std::move(g);
            target.lent = Lent::lent;
          }
        }
        if (target.buffer.empty()) continue;
        Tensor& slot = target.buffer[slot_nr];
        if (slot.defined()) pending[k] = {&slot, holds_leaf_grad(target, slot), create_graph};
      }
      // A lent .grad the closure did not take goes back to waiting in the leaf alone, to be
      // added there as before; one it took comes back inside the closure's gradient.
      auto settle_lent = [&] {
        for (size_t k = 0; k < pending.size(); ++k) {
          WalkNode& target = nodes[edge_targets[k]];
          if (!pending[k].slot || target.lent != Lent::lent) continue;
          if (pending[k].slot->defined()) {
            *pending[k].slot = Tensor();
            target.lent = Lent::no;
          } else {
            target.lent = Lent::taken;
          }
        }
      };
      try {
        autograd::InputGradMask mask(&wanted);
        autograd::PendingGrads handed(&pending);
        if (nodes[i].lent == Lent::taken) nodes[i].sink->set_total(grads[0]);  // .grad is in it already
        else results = n->apply(grads);
        settle_lent();
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
    const auto edge_targets = targets(nodes[i]);
    for (size_t k = 0; k < edges.size(); ++k) {
      const uint32_t t = edge_targets[k];
      if (t == kNoTarget || !nodes[t].needed) continue;
      if (k < results.size() && results[k].defined()) {
        const Shape& want = n->input_shapes()[k];
        EMBER_CHECK(results[k].sizes() == want, "backward of ", n->name(), " returned a gradient of shape ",
                    shape_str(results[k].sizes()), " for input ", k, " of shape ", shape_str(want));
        deliver(t, edges[k].input_nr, results[k]);
      }
      if (--nodes[t].deps == 0 && !nodes[t].queued) {
        ready.push(t);
        nodes[t].queued = true;
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
