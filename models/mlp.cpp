#include "ember/models/mlp.h"

#include "ember/ops/elementwise.h"
#include "ember/ops/shape.h"

namespace ember::models {

MLP::MLP(int64_t in, int64_t hidden, int64_t layers, int64_t out, bool residual) : residual_(residual) {
  EMBER_CHECK(layers >= 2, "MLP: needs at least 2 layers, got ", layers);
  EMBER_CHECK(!residual || in == out, "MLP: a residual MLP needs in == out, got ", in, " and ", out);
  net_ = register_module("net", std::make_shared<nn::Sequential>());
  net_->push_back(std::make_shared<nn::Linear>(in, hidden));
  for (int64_t i = 0; i < layers - 2; ++i) {
    net_->push_back(nn::Softplus());
    net_->push_back(std::make_shared<nn::Linear>(hidden, hidden));
  }
  net_->push_back(std::make_shared<nn::Linear>(hidden, out));
}

Tensor MLP::forward(const Tensor& x) {
  Tensor y = net_->forward(x);
  return residual_ ? add(y, x) : y;
}

ResidualMLP::ResidualMLP(int64_t in, int64_t hidden, int64_t layers, int64_t out, bool residual_output)
    : residual_output_(residual_output) {
  EMBER_CHECK(layers >= 2, "ResidualMLP: needs at least 2 layers, got ", layers);
  EMBER_CHECK(!residual_output || in == out, "ResidualMLP: residual_output needs in == out, got ", in, " and ", out);
  in_ = register_module("in", std::make_shared<nn::Linear>(in, hidden));
  blocks_ = register_module("blocks", std::make_shared<nn::ModuleList>());
  for (int64_t i = 0; i < layers - 2; ++i) blocks_->push_back(std::make_shared<nn::Linear>(hidden, hidden));
  out_ = register_module("out", std::make_shared<nn::Linear>(hidden, out));
}

Tensor ResidualMLP::forward(const Tensor& x) {
  Tensor h = (*in_)(x);
  for (size_t i = 0; i < blocks_->size(); ++i) h = add(h, (*blocks_)[i](softplus(h)));
  Tensor y = (*out_)(softplus(h));
  return residual_output_ ? add(y, x) : y;
}

DenseNetMLP::DenseNetMLP(int64_t in, int64_t growth, int64_t layers, int64_t out, bool end_sigmoid)
    : end_sigmoid_(end_sigmoid) {
  ls_ = register_module("ls", std::make_shared<nn::ModuleList>());
  int64_t width = in;
  for (int64_t i = 0; i < layers; ++i) {
    ls_->push_back(std::make_shared<nn::Linear>(width, growth));
    width += growth;
  }
  out_ = register_module("out", std::make_shared<nn::Linear>(width, out));
}

Tensor DenseNetMLP::forward(const Tensor& x) {
  Tensor h = x;
  for (size_t i = 0; i < ls_->size(); ++i) h = cat({softplus((*ls_)[i](h)), h}, 1);
  Tensor y = (*out_)(h);
  return end_sigmoid_ ? sigmoid(y) : y;
}

}  // namespace ember::models
