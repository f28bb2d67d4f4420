#include "kernels/quant.hpp"

#include "kernels/registry.hpp"

namespace shoal::kernels {

void register_quant_kernels() {}

} // namespace shoal::kernels
