#include "kernels/matmul.hpp"

#include <doctest/doctest.h>
