#include "kernels/nn.hpp"

#include "kernels/registry.hpp"

namespace shoal::kernels {

void register_nn_kernels() {}

} // namespace shoal::kernels
