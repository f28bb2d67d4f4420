#pragma once
/// @file (being written)

namespace shoal::kernels {} // namespace shoal::kernels
