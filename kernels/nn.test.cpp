#include "kernels/nn.hpp"

#include <doctest/doctest.h>
