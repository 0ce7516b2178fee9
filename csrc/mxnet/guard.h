// The boundary between the operators and MXNet: no C++ exception may cross it.
#pragma once

#include <mxnet/lib_api.h>

#include <exception>
#include <new>

namespace fusedrnn {
namespace mxnet_ops {

// Runs f; an exception becomes MX_FAIL with its message, prefixed by the operator's name,
// which MXNet raises as MXNetError.
template <typename F>
mxnet::ext::MXReturnValue guarded(const char* op, F&& f) {
  try {
    f();
    return mxnet::ext::MX_SUCCESS;
  } catch (const std::bad_alloc&) {
    MX_ERROR_MSG << op << ": out of memory (the sizes need more than the machine has)";
  } catch (const std::exception& e) {
    MX_ERROR_MSG << op << ": " << e.what();
  } catch (...) {
    MX_ERROR_MSG << op << ": unknown error";
  }
  return mxnet::ext::MX_FAIL;
}

}  // namespace mxnet_ops
}  // namespace fusedrnn
