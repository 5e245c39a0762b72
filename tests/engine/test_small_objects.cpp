// The containers behind an op's bookkeeping, which keep its short lists and closures off the
// heap: SmallVector (Shape, TensorList, a node's lists) checked against std::vector under
// random edits, with elements that count their lives; InlineFunction (a node's backward) for
// calls, moves and destruction inline and on the heap; the object pool (TensorImpl, Storage,
// Node) for reuse, across threads and past its cap; and the graph walk's node table on a graph
// that outgrows it.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ember/ember.h"
#include "ember/engine/autograd/node.h"
#include "ember/engine/inline_function.h"
#include "ember/engine/object_pool.h"
#include "ember/engine/small_vector.h"

using namespace ember;

namespace {

// Counts live instances, so a leak or a double destruction shows as a non-zero balance.
struct Counted {
  static inline int64_t live = 0;
  std::string value;
  Counted() : value("default") { ++live; }
  explicit Counted(std::string v) : value(std::move(v)) { ++live; }
  Counted(const Counted& o) : value(o.value) { ++live; }
  Counted(Counted&& o) noexcept : value(std::move(o.value)) { ++live; }
  Counted& operator=(const Counted&) = default;
  Counted& operator=(Counted&&) noexcept = default;
  ~Counted() { --live; }
  bool operator==(const Counted& o) const { return value == o.value; }
};

template <typename V>
std::vector<std::string> strings(const V& v) {
  std::vector<std::string> out;
  for (const auto& c : v) out.push_back(c.value);
  return out;
}

bool stored_inside(const void* object, size_t object_size, const void* p) {
  auto* b = static_cast<const char*>(object);
  auto* q = static_cast<const char*>(p);
  return q >= b && q < b + object_size;
}

}  // namespace

TEST(SmallVector, KeepsUpToNInsideAndGrowsPastThem) {
  SmallVector<int64_t, 4> v{1, 2, 3};
  EXPECT_TRUE(stored_inside(&v, sizeof v, v.data()));
  v.push_back(4);
  EXPECT_TRUE(stored_inside(&v, sizeof v, v.data()));
  EXPECT_EQ(v.capacity(), 4u);
  v.push_back(5);
  EXPECT_FALSE(stored_inside(&v, sizeof v, v.data()));
  EXPECT_EQ(v.to_vector(), (std::vector<int64_t>{1, 2, 3, 4, 5}));
  // A copy of a heap vector that fits goes inside; a move of a heap vector takes its buffer.
  v.pop_back();
  SmallVector<int64_t, 4> copy = v;
  EXPECT_TRUE(stored_inside(&copy, sizeof copy, copy.data()));
  v.push_back(5);
  const int64_t* buffer = v.data();
  SmallVector<int64_t, 4> moved = std::move(v);
  EXPECT_EQ(moved.data(), buffer);
  EXPECT_TRUE(v.empty());  // NOLINT: moved-from is empty and usable
  v.push_back(7);
  EXPECT_EQ(v.to_vector(), (std::vector<int64_t>{7}));
}

TEST(SmallVector, ValuesThatReferToItselfSurviveGrowth) {
  SmallVector<Counted, 2> v{Counted("a"), Counted("b")};
  v.push_back(v[0]);  // grows while reading its own element
  v.insert(v.begin() + 1, v.begin(), v.end());  // a range inside itself
  v.resize(8, v[1]);
  EXPECT_EQ(strings(v), (std::vector<std::string>{"a", "a", "b", "a", "b", "a", "a", "a"}));
  v.clear();
  EXPECT_EQ(Counted::live, 0);
}

TEST(SmallVector, MatchesStdVectorUnderRandomEdits) {
  // The same random edits on a SmallVector and a std::vector, compared after each; elements
  // that count their lives catch a leak or a double destruction.
  std::mt19937 rng(7);
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n)(rng); };
  {
    SmallVector<Counted, 3> a, other;
    std::vector<Counted> b, other_b;
    for (int step = 0; step < 4000; ++step) {
      const std::string s = std::to_string(step);
      switch (pick(11)) {
        case 0: case 1: a.push_back(Counted(s)); b.push_back(Counted(s)); break;
        case 2: if (!b.empty()) { a.pop_back(); b.pop_back(); } break;
        case 3: { size_t i = pick(b.size()); a.insert(a.begin() + i, Counted(s)); b.insert(b.begin() + static_cast<std::ptrdiff_t>(i), Counted(s)); break; }
        case 4: if (!b.empty()) { size_t i = pick(b.size() - 1), j = i + pick(b.size() - i - 1);
                  a.erase(a.begin() + i, a.begin() + j); b.erase(b.begin() + static_cast<std::ptrdiff_t>(i), b.begin() + static_cast<std::ptrdiff_t>(j)); } break;
        case 5: { size_t n = pick(9); a.resize(n); b.resize(n); break; }
        case 6: { size_t n = pick(9); a.resize(n, Counted(s)); b.resize(n, Counted(s)); break; }
        case 7: { size_t i = pick(b.size()), n = pick(4); a.insert(a.begin() + i, n, Counted(s)); b.insert(b.begin() + static_cast<std::ptrdiff_t>(i), n, Counted(s)); break; }
        case 8: other = a; other_b = b; break;
        case 9: a = std::move(other); b = std::move(other_b); other.clear(); other_b.clear(); break;
        case 10: { SmallVector<Counted, 3> t(std::move(a)); a = t; std::vector<Counted> u(std::move(b)); b = u; break; }
        default: if (!b.empty()) { size_t i = pick(b.size() - 1); a.erase(a.begin() + i); b.erase(b.begin() + static_cast<std::ptrdiff_t>(i)); } break;
      }
      ASSERT_EQ(strings(a), strings(b)) << "after step " << step;
    }
    EXPECT_EQ(Counted::live, static_cast<int64_t>(a.size() + b.size() + other.size() + other_b.size()));
  }
  EXPECT_EQ(Counted::live, 0);
}

TEST(SmallVector, ComparesAndConvertsLikeStdVector) {
  const std::vector<int64_t> sv{2, 3, 4};
  const Shape s = sv;  // from a std::vector
  EXPECT_EQ(s, (Shape{2, 3, 4}));
  EXPECT_NE(s, (Shape{2, 3}));
  EXPECT_LT((Shape{2, 3}), s);
  EXPECT_LT(s, (Shape{2, 4}));
  EXPECT_EQ((Shape{2, 3}) < s, (std::vector<int64_t>{2, 3}) < sv);
  EXPECT_EQ(s.to_vector(), sv);
  EXPECT_EQ(Shape(3).to_vector(), (std::vector<int64_t>(3, 0)));
  EXPECT_EQ(Shape(2, 5).to_vector(), (std::vector<int64_t>{5, 5}));
  EXPECT_THROW((void)s.at(3), std::out_of_range);
}

TEST(InlineFunction, CallsMovesAndDestroysSmallAndLargeClosures) {
  using Fn = InlineFunction<std::string(const std::string&), 48>;
  auto alive = std::make_shared<int>(0);
  {
    Fn small = [alive, tag = std::string("s")](const std::string& x) { return tag + x; };  // inline
    std::array<char, 200> pad{};
    pad[0] = 'L';
    Fn large = [alive, pad](const std::string& x) { return std::string(1, pad[0]) + x; };  // on the heap
    EXPECT_EQ(alive.use_count(), 3);
    EXPECT_EQ(small("1"), "s1");
    EXPECT_EQ(large("2"), "L2");
    Fn moved_small = std::move(small), moved_large = std::move(large);
    EXPECT_FALSE(small);  // NOLINT: moved-from is empty
    EXPECT_FALSE(large);  // NOLINT
    EXPECT_THROW(small("x"), std::bad_function_call);
    EXPECT_EQ(moved_small("3"), "s3");
    EXPECT_EQ(moved_large("4"), "L4");
    EXPECT_EQ(alive.use_count(), 3);  // moved, not copied
    moved_large = nullptr;  // releases its captures, as a released node's backward does
    EXPECT_EQ(alive.use_count(), 2);
    moved_small = std::move(moved_large);  // assigning an empty one destroys the old closure
    EXPECT_EQ(alive.use_count(), 1);
    EXPECT_FALSE(moved_small);
  }
  EXPECT_EQ(alive.use_count(), 1);
  EXPECT_FALSE(Fn(std::function<std::string(const std::string&)>()));  // empty stays empty
}

TEST(InlineFunction, TheClosuresOpsRecordFitInsideTheirNode) {
  // What ops capture: sum's input shape, dims and keepdim; softplus_curvature's three tensors,
  // their InputGrads and two constants. A Shape must stay 64 bytes for the first.
  EXPECT_EQ(sizeof(Shape), 64u);
  Shape in_shape{2, 3}, rd{1};
  Tensor x = ones({2});
  auto sum_like = [in_shape, rd, keepdim = false](const TensorList& g, const TensorList&) {
    return TensorList{g[0].expand(in_shape)};
  };
  auto curvature_like = [x, y = x, a = x, beta = 1.0, threshold = 20.0, rx = autograd::input_grad(x, 0),
                         ry = autograd::input_grad(x, 1), ra = autograd::input_grad(x, 2)](const TensorList& g,
                                                                                             const TensorList&) {
    return TensorList{g[0]};
  };
  EXPECT_TRUE(autograd::BackwardFn::fits_inline<decltype(sum_like)>());
  EXPECT_TRUE(autograd::BackwardFn::fits_inline<decltype(curvature_like)>());
  std::array<char, 200> pad{};
  auto too_big = [pad](const TensorList& g, const TensorList&) { return TensorList{g[0]}; };
  EXPECT_FALSE(autograd::BackwardFn::fits_inline<decltype(too_big)>());
}

TEST(ObjectPool, ReusesFreedBlocksAndFreesEachObjectOnce) {
  using Pool = BlockPool<96, 8>;
  void* a = Pool::allocate();
  Pool::deallocate(a);
  void* b = Pool::allocate();
  if (!EMBER_ASAN) EXPECT_EQ(b, a);  // the freed block comes back first (nothing is pooled under ASan)
  Pool::deallocate(b);

  const int64_t before = Counted::live;
  {
    std::vector<std::shared_ptr<Counted>> many;
    for (int i = 0; i < 20000; ++i) many.push_back(make_pooled<Counted>(std::to_string(i)));  // past the list's cap
    EXPECT_EQ(many[12345]->value, "12345");
    EXPECT_EQ(Counted::live, before + 20000);
  }
  EXPECT_EQ(Counted::live, before);
}

TEST(ObjectPool, TensorsMadeOnOneThreadDieOnAnother) {
  // A loader thread's batches freed by the training loop, and the loader thread ending.
  std::vector<Tensor> made;
  std::thread producer([&] {
    for (int i = 0; i < 3000; ++i) made.push_back(full({2, 3}, i));
  });
  producer.join();  // its free lists are gone; the tensors it made still live
  for (int i = 0; i < 3000; i += 997) EXPECT_EQ(made[i].to_vector<double>()[5], i);
  made.clear();  // freed here, into this thread's lists
  std::thread consumer([] {
    std::vector<Tensor> mine;
    for (int i = 0; i < 3000; ++i) mine.push_back(full({3}, i));
    EXPECT_EQ(mine[2999].to_vector<double>()[0], 2999);
  });
  consumer.join();
  EXPECT_EQ(full({4}, 1.5).sum().item<double>(), 6.0);
}

TEST(GraphWalk, AGraphOfThousandsOfNodesOutgrowsTheNodeTable) {
  // Each step adds nodes the walk numbers (its table starts at 512 slots, grown at half full);
  // d/dx of x * 1.001^n is 1.001^n.
  Tensor x = full({3}, 2.0, {.dtype = DType::f64, .requires_grad = true});
  Tensor y = x;
  const int n = 1500;
  for (int i = 0; i < n; ++i) y = mul(y, 1.001);
  Tensor gx = grad({y.sum()}, {x})[0];
  for (double g : gx.to_vector<double>()) EXPECT_NEAR(g, std::pow(1.001, n), 1e-9);
}
