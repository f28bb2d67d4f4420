#include "kernels/learn.hpp"

#include "kernels/registry.hpp"

namespace shoal::kernels {

void register_learn_kernels() {}

} // namespace shoal::kernels
