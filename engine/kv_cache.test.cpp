#include "engine/kv_cache.hpp"
#include "engine/model.hpp"
#include "engine/model_writer.hpp"

#include <doctest/doctest.h>

TEST_CASE("kv_cache placeholder") {}
