#include "kernels/quant.hpp"

#include <doctest/doctest.h>
