#pragma once
/// @file The instant loop's trajectory ring: a bounded, lock-free
/// single-producer / single-consumer queue (Lamport's ring: the producer
/// owns the tail, the consumer the head, each published with release and
/// read with acquire ordering) carrying router v2's decisions from the
/// router's thread to the SONA actor without a lock or a message per
/// request. Slots are preallocated and reused: once their vectors have
/// grown to size, a push copies features without allocating.
///
/// A full ring refuses a push (counted in dropped()): the consumer drains it
/// on every feedback and on a timer, and a dropped trajectory only means no
/// instant step for that request (v1's statistics still learn from it).
/// Thread-safety: push from one thread, drain/dropped from one other thread.

#include "learn/router_v2.hpp"

#include <atomic>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace shoal::learn {

class trajectory_ring {
public:
  /// @param capacity slots, rounded up to a power of two (at least 2).
  explicit trajectory_ring(size_t capacity) {
    size_t n = 2;
    while (n < capacity)
      n <<= 1;
    slots_.resize(n);
    mask_ = n - 1;
  }

  size_t capacity() const noexcept { return slots_.size(); }

  /// Records one decision (producer only). Returns false when full.
  /// Copies every input of the decision (`in`: embedding, neighbour
  /// statistics, prompt length, latency budget, memory pressure), the
  /// session state before the turn, the tier and sampling grid indices
  /// served and their joint probability.
  bool push(uint64_t request_id, const router_v2_input& in, std::span<const float> h_prev,
            uint32_t tier, float behaviour_prob, uint32_t scope = no_scope,
            uint8_t temperature = no_choice, uint8_t top_p = no_choice) {
    const size_t tail = tail_.load(std::memory_order_relaxed);
    if (tail - head_cache_ > mask_) {
      head_cache_ = head_.load(std::memory_order_acquire);
      if (tail - head_cache_ > mask_) {
        dropped_.fetch_add(1, std::memory_order_relaxed);
        return false;
      }
    }
    auto& s = slots_[tail & mask_];
    s.request_id = request_id;
    auto& t = s.trajectory;
    t.embedding.assign(in.embedding.begin(), in.embedding.end());
    t.neighbor_sims.assign(in.neighbor_sims.begin(), in.neighbor_sims.end());
    t.neighbor_rewards.assign(in.neighbor_rewards.begin(), in.neighbor_rewards.end());
    t.neighbor_counts.assign(in.neighbor_counts.begin(), in.neighbor_counts.end());
    t.prompt_tokens = in.prompt_tokens;
    t.latency_budget = in.latency_budget;
    t.memory_pressure = in.memory_pressure;
    t.h_prev.assign(h_prev.begin(), h_prev.end());
    t.tier = tier;
    t.scope = scope;
    t.behaviour_prob = behaviour_prob;
    t.temperature = temperature;
    t.top_p = top_p;
    t.context_tokens = 0;
    t.reward = 0;
    tail_.store(tail + 1, std::memory_order_release);
    return true;
  }

  /// Hands every queued trajectory to fn(request_id, trajectory&) (consumer
  /// only; fn copies what it keeps: the slot is reused). Returns how many.
  template <class F>
  size_t drain(F&& fn) {
    const size_t head = head_.load(std::memory_order_relaxed);
    const size_t tail = tail_.load(std::memory_order_acquire);
    for (size_t i = head; i != tail; ++i) {
      auto& s = slots_[i & mask_];
      fn(s.request_id, std::as_const(s.trajectory));
    }
    head_.store(tail, std::memory_order_release);
    return tail - head;
  }

  /// Pushes refused because the ring was full.
  uint64_t dropped() const noexcept { return dropped_.load(std::memory_order_relaxed); }

private:
  struct slot {
    uint64_t request_id = 0;
    router_v2_trajectory trajectory;
  };
  std::vector<slot> slots_;
  size_t mask_ = 0;
  alignas(64) std::atomic<size_t> head_{0}; // consumer's
  alignas(64) std::atomic<size_t> tail_{0}; // producer's
  alignas(64) size_t head_cache_ = 0;       // producer's last view of head
  std::atomic<uint64_t> dropped_{0};
};

} // namespace shoal::learn
