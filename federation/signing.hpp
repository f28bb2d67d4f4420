#pragma once
/// @file Signed federation envelopes: an envelope's signature is its
/// signer's Ed25519 signature (crypto/identity.hpp) over [kind] ++ payload,
/// so a payload signed as one kind of message does not verify as another.
/// Receivers accept a message only when its signer is in their trust list
/// (crypto/trust_list.hpp) and the signature verifies.
///
/// Thread-safety: pure functions over immutable keys; any thread.

#include "crypto/identity.hpp"
#include "crypto/trust_list.hpp"
#include "proto/wire.hpp"

#include <cstdint>
#include <string>

namespace shoal::federation {

/// Seals `payload` of `kind` into an envelope signed by `self` as `signer`
/// (the name receivers trust `self`'s key under).
proto::envelope seal(const crypto::identity& self, proto::wire_kind kind, std::string payload,
                     std::string signer);

/// Verifies `e` against `trusted`. @returns the signer's node id
/// (crypto::key_id of its key). Errors: `errc::not_found` (context
/// "signer") when the signer is not trusted ("untrusted signer 'x'");
/// `errc::invalid_argument` (context "signature") when the signature has
/// the wrong length or does not verify ("bad signature from 'x'...").
core::result<uint64_t> verify(const crypto::trust_list& trusted, const proto::envelope& e);

} // namespace shoal::federation
