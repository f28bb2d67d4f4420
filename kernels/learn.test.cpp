#include "kernels/learn.hpp"

#include <doctest/doctest.h>
