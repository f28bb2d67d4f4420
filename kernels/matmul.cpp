#include "kernels/matmul.hpp"

#include "kernels/registry.hpp"

namespace shoal::kernels {

void register_matmul_kernels() {}

} // namespace shoal::kernels
