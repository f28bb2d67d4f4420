#pragma once
/// @file Shoal's errors (core/error.hpp) inside `caf::error`, so that they
/// cross actors and nodes: the code travels as caf::error's code in Shoal's
/// category, message and context as its context. node/ maps codes to HTTP.

#include "core/error.hpp"

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <string>

namespace shoal {

/// Category atom of Shoal's errors inside `caf::error`.
using errc_category = caf::atom_constant<caf::atom("shoal")>;

/// Makes a `caf::error` in Shoal's category carrying a message for people
/// and (optionally) the context for programs (core::error::context).
caf::error make_error(errc code, std::string message, std::string context = {});

/// The same for an error value.
caf::error make_error(const core::error& e);

/// Shoal's code, message and context of an error; other categories map to
/// `errc::internal` with CAF's rendering as message. Thread-safe (pure).
core::error view(const caf::error& err);

} // namespace shoal
