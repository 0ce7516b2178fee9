// One cell step on MXNet NDArrays through MXNet's engine but without its operator dispatch:
// the inference step of fusedrnn's Gluon cells (decoding loops). Plain types only, so the
// Python glue can bind it without MXNet's headers.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "fusedrnn/rnn.h"

namespace fusedrnn {
namespace mxnet_ops {

// Addresses of the MXNet C API functions nd_cell_step calls, by name (MXNDArrayGetData, ...),
// taken from the libmxnet that Python loaded. Must be called once before nd_cell_step.
void set_ndarray_api(const std::map<std::string, uintptr_t>& functions);

// The handles of the NDArrays [h', c'] (LSTM) or [h'] after one step of cell `mode` from
// x [N, C] and states [h [N, H], c [N, H]], with weights {i2h_weight [G*H, C], h2h_weight
// [G*H, H], i2h_bias, h2h_bias}, on the inputs' device; the caller owns them. The step is
// pushed to MXNet's engine like an operator: it runs after every write queued before it on
// its inputs and before any queued after it, and its outputs are pending until it has run.
// (It runs before this returns when its inputs are ready by then, else on an engine worker
// once they are.) Empty when the arrays are not all dense CPU arrays of one float dtype on
// one device (the caller then goes through the operator); a wrong shape throws
// InvalidArgument naming the argument, before anything is pushed. A failure while the step
// runs (the checks leave out-of-memory) is raised where the outputs are read, as MXNet
// raises an operator's; or here, as std::runtime_error, if the step ran before this returned.
std::vector<uintptr_t> nd_cell_step(const std::string& mode, bool reset_after, uintptr_t x,
                                    const std::vector<uintptr_t>& states,
                                    const std::vector<uintptr_t>& weights);

// The same for one layer and direction over a whole sequence (a Gluon layer's inference):
// x [T, N, C], states [h0 [1, N, P], c0 [1, N, H]] or none (zeros), weights {i2h_weight, h2h_weight,
// i2h_bias, h2h_bias(, h2r_weight with a projection)}; options: the mode and its options
// (the sizes come from the arrays). Returns the handles of [y [T, N, P], hy [1, N, P],
// (cy [1, N, H])]. Empty also when a shape does not fit: the operator then reports it.
std::vector<uintptr_t> nd_layer_forward(const RnnDesc& options, bool projection, uintptr_t x,
                                        const std::vector<uintptr_t>& states,
                                        const std::vector<uintptr_t>& weights);

}  // namespace mxnet_ops
}  // namespace fusedrnn
