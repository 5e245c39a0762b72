// ember: one header for the whole public API (namespace ember).
#pragma once

#include "ember/engine/autograd/engine.h"
#include "ember/engine/autograd/functional.h"
#include "ember/engine/autograd/grad_mode.h"
#include "ember/engine/autograd/gradcheck.h"
#include "ember/engine/autograd/graph_export.h"
#include "ember/engine/autograd/node.h"
#include "ember/engine/device.h"
#include "ember/engine/dtype.h"
#include "ember/engine/error.h"
#include "ember/engine/factory.h"
#include "ember/engine/random.h"
#include "ember/engine/tensor.h"
#include "ember/ops/elementwise.h"
#include "ember/ops/linalg.h"
#include "ember/ops/reduce.h"
#include "ember/ops/shape.h"
