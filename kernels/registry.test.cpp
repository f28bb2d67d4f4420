#include "kernels/registry.hpp"

#include <doctest/doctest.h>
