#include "engine/sampler.hpp"

#include "kernels/nn.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>

// Passes over the whole vocabulary are compiled for AVX-512, AVX2 and the
// baseline and picked when the program loads (GCC function multiversioning).
// They are elementwise or keep a fixed lane order, and none contains a
// multiply-add that the compiler could contract into an FMA in one clone but
// not another, so every clone returns bit-identical results. Keep it so.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SHOAL_VOCAB_PASS __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SHOAL_VOCAB_PASS
#endif

namespace shoal::engine {

namespace {

using detail::sampler_candidate;

constexpr float ninf = -std::numeric_limits<float>::infinity();
constexpr float max_finite = std::numeric_limits<float>::max();

/// Kept sets up to this size are drawn from a list sorted by id; larger ones
/// by a dense pass over the vocabulary.
constexpr size_t list_draw_limit = 1024;
/// Block length of the dense draw's prefix sums.
constexpr size_t draw_block = 256;
/// Buckets of the top-p histogram (uniform in logit), and interleaved copies
/// of it: consecutive tokens in one slot would otherwise chain their
/// read-add-write through memory. Non-candidates go to one of n_spill slots
/// past the buckets, by id, for the same reason.
constexpr uint16_t n_buckets = 1024;
constexpr size_t n_spill = 64;
constexpr size_t n_slots = n_buckets + n_spill;
constexpr size_t n_histograms = 4;
/// Softmax inputs are raised to at least (max - softmax_floor_nats): their
/// weight e^-60 ≈ 9e-27 of the top token's is far below float resolution of
/// the sum (n·e^-60 < 2e-21 for n < 2^31/1000), and it keeps the SIMD exp
/// and the normalisation away from subnormal results, each of which costs a
/// microcode assist (~100 cycles) on x86.
constexpr float softmax_floor_nats = 60.0f;
/// Independent accumulator lanes in reductions: a single float accumulator
/// is a serial chain the compiler may not reorder (and so not vectorise).
constexpr size_t n_lanes = 16;

/// Key of the chain's order (see sampler_candidate): -0 folds into +0 so
/// that key order equals `l_a > l_b || (l_a == l_b && id_a < id_b)`.
uint64_t order_key(float logit, size_t id) noexcept {
  uint32_t u = std::bit_cast<uint32_t>(logit + 0.0f);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (uint64_t{u} << 32) | static_cast<uint32_t>(~static_cast<uint32_t>(id));
}

int32_t id_of(uint64_t key) noexcept {
  return static_cast<int32_t>(~static_cast<uint32_t>(key));
}

/// Comparators as function objects, so that std::sort inlines them.
struct better_t {
  bool operator()(const sampler_candidate& a, const sampler_candidate& b) const noexcept {
    return a.key > b.key;
  }
};
constexpr better_t better{};

struct lower_id_t {
  bool operator()(const sampler_candidate& a, const sampler_candidate& b) const noexcept {
    return id_of(a.key) < id_of(b.key);
  }
};
constexpr lower_id_t lower_id{};

std::string fmt_value(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

/// Error text "<name> must be in <range>, got <value>".
core::error out_of_range(const char* name, const char* range, double got) {
  return core::error{errc::invalid_argument,
                     std::string(name) + " must be in " + range + ", got " + fmt_value(got)};
}

/// NaN fails every check (comparisons with NaN are false).
bool in_closed(double v, double lo, double hi) noexcept {
  return v >= lo && v <= hi;
}

float sanitize1(float x) noexcept {
  return x != x ? ninf : (x > max_finite ? max_finite : x);
}

/// Range of a logit row and the lowest index of its maximum.
struct logit_range {
  float min, max;
  int32_t argmax;
};

/// dst[i] = src[i] with NaN -> -inf and +inf -> the largest finite float
/// (dst may be src). @return the range of dst (max == -inf: every entry
/// -inf or NaN; argmax is then 0). @pre n < 2^31.
SHOAL_VOCAB_PASS
logit_range sanitize(const float* src, float* dst, size_t n) noexcept {
  float lo[n_lanes], hi[n_lanes];
  int32_t at[n_lanes];
  for (size_t j = 0; j < n_lanes; ++j) {
    lo[j] = max_finite;
    hi[j] = ninf;
    at[j] = 0;
  }
  const size_t n_main = n / n_lanes * n_lanes;
  for (size_t i = 0; i < n_main; i += n_lanes)
    for (size_t j = 0; j < n_lanes; ++j) {
      const float x = sanitize1(src[i + j]);
      dst[i + j] = x;
      lo[j] = x < lo[j] ? x : lo[j];
      const bool gt = x > hi[j];
      hi[j] = gt ? x : hi[j];
      at[j] = gt ? static_cast<int32_t>(i + j) : at[j];
    }
  for (size_t i = n_main, j = 0; i < n; ++i, ++j) {
    const float x = sanitize1(src[i]);
    dst[i] = x;
    lo[j] = x < lo[j] ? x : lo[j];
    if (x > hi[j]) {
      hi[j] = x;
      at[j] = static_cast<int32_t>(i);
    }
  }
  logit_range r{max_finite, ninf, 0};
  for (size_t j = 0; j < n_lanes; ++j) {
    r.min = std::min(r.min, lo[j]);
    if (hi[j] > r.max || (hi[j] == r.max && at[j] < r.argmax)) {
      r.max = hi[j];
      r.argmax = at[j];
    }
  }
  return r;
}

/// y[i] = max(x[i] - max, -softmax_floor_nats) (-inf included).
SHOAL_VOCAB_PASS
void shift_and_floor(const float* x, float* y, size_t n, float max) noexcept {
  const float floor = -softmax_floor_nats;
  for (size_t i = 0; i < n; ++i) {
    const float z = x[i] - max;
    y[i] = z > floor ? z : floor;
  }
}

/// dst = softmax(src) with every input at least max - softmax_floor_nats
/// (an extra pass only when some input lies lower; subtracting first keeps
/// this right for logits near ±FLT_MAX). -inf inputs get weight e^-60 here:
/// callers exclude them where it matters. @pre r is src's range with r.max
/// finite; dst.size() == src.size().
void softmax_floored(std::span<float> dst, std::span<const float> src, logit_range r) noexcept {
  if (r.min - r.max >= -softmax_floor_nats) {
    kernels::softmax(dst, src);
    return;
  }
  shift_and_floor(src.data(), dst.data(), src.size(), r.max);
  kernels::softmax(dst, dst);
}

/// The largest (Max) or smallest element of the 256 bytes at x: 64 floats or
/// 128 uint16. GCC vector extensions, so one compare covers 64 bytes in the
/// AVX-512 clone (32 or 16 in the others); the lanes are reduced in scalar.
template <bool Max, class T>
T extreme_of_256_bytes(const T* x) noexcept {
  constexpr size_t n_per_vec = 64 / sizeof(T);
#if defined(__GNUC__) && !defined(__clang__)
  typedef T vec __attribute__((vector_size(64)));
  vec m, v;
  std::memcpy(&m, x, sizeof m);
  for (size_t r = 1; r < 4; ++r) {
    std::memcpy(&v, x + n_per_vec * r, sizeof v);
    if constexpr (Max)
      m = v > m ? v : m;
    else
      m = v < m ? v : m;
  }
  T lanes[n_per_vec];
  std::memcpy(lanes, &m, sizeof lanes);
  T e = lanes[0];
  for (size_t j = 1; j < n_per_vec; ++j)
    e = Max ? (lanes[j] > e ? lanes[j] : e) : (lanes[j] < e ? lanes[j] : e);
  return e;
#else
  return Max ? *std::max_element(x, x + 4 * n_per_vec) : *std::min_element(x, x + 4 * n_per_vec);
#endif
}

/// The k best of `logits` in the chain's order, written sorted (best first)
/// to out[0, k). A k-entry heap keeps the worst at its front; blocks of 64
/// with nothing above it are skipped after a vector max. Since ids rise
/// during the scan, an equal logit never displaces an entry. Cost
/// O(n + k·log k·log(n/k)) for logits in random order.
/// @pre 0 < k <= n; out has room for k.
SHOAL_VOCAB_PASS
void select_top_k(const float* logits, size_t n, size_t k, sampler_candidate* out) noexcept {
  for (size_t i = 0; i < k; ++i)
    out[i] = {order_key(logits[i], i), logits[i], 0.0f};
  std::make_heap(out, out + k, better); // front = worst of the k
  float worst = out[0].logit;
  auto offer = [&](size_t i) {
    if (logits[i] > worst) {
      std::pop_heap(out, out + k, better);
      out[k - 1] = {order_key(logits[i], i), logits[i], 0.0f};
      std::push_heap(out, out + k, better);
      worst = out[0].logit;
    }
  };
  size_t i = k;
  for (; i < n && i % 64 != 0; ++i)
    offer(i);
  for (; i + 64 <= n; i += 64)
    if (extreme_of_256_bytes<true>(logits + i) > worst)
      for (size_t j = i; j < i + 64; ++j)
        offer(j);
  for (; i < n; ++i)
    offer(i);
  std::sort(out, out + k, better);
}

/// Whether token i is at or better than the boundary (bl, bid) in the
/// chain's order (int32 ids: the compare shares vector lanes with floats).
inline bool at_or_better(float l, int32_t i, float bl, int32_t bid) noexcept {
  return (l > bl) | ((l == bl) & (i <= bid));
}

/// pr[i] = (l[i] - max_logit) / t for kept tokens, floored at
/// -softmax_floor_nats; the same floor for the others (zeroed later).
SHOAL_VOCAB_PASS
void temperature_logits(const float* l, float* pr, int32_t n, float max_logit, float t, float bl,
                        int32_t bid) noexcept {
  const float floor = -softmax_floor_nats;
  for (int32_t i = 0; i < n; ++i) {
    const float z = (l[i] - max_logit) / t;
    pr[i] = at_or_better(l[i], i, bl, bid) & (z > floor) ? z : floor;
  }
}

/// Zeroes pr[i] of excluded and -inf tokens and writes the sum of each block
/// of draw_block into sums. @return the total (double).
SHOAL_VOCAB_PASS
double mask_and_sum_blocks(const float* l, float* pr, int32_t n, float bl, int32_t bid, float* sums,
                           size_t n_blocks) noexcept {
  double total = 0;
  for (size_t b = 0; b < n_blocks; ++b) {
    const auto begin = static_cast<int32_t>(b * draw_block);
    const int32_t end = std::min(n, begin + static_cast<int32_t>(draw_block));
    float acc[n_lanes] = {};
    int32_t i = begin;
    for (; i + static_cast<int32_t>(n_lanes) <= end; i += static_cast<int32_t>(n_lanes))
      for (int32_t j = 0; j < static_cast<int32_t>(n_lanes); ++j) {
        const bool kept = at_or_better(l[i + j], i + j, bl, bid) & (l[i + j] > ninf);
        pr[i + j] = kept ? pr[i + j] : 0.0f;
        acc[j] += pr[i + j];
      }
    for (; i < end; ++i) {
      const bool kept = at_or_better(l[i], i, bl, bid) & (l[i] > ninf);
      pr[i] = kept ? pr[i] : 0.0f;
      acc[0] += pr[i];
    }
    float sum = 0;
    for (float a : acc)
      sum += a;
    sums[b] = sum;
    total += sum;
  }
  return total;
}

/// Top-p histogram buckets: bucket[i] = min(n_buckets - 1, ⌊(max_logit -
/// l[i])·scale⌋) for candidates (p[i] >= eps and l[i] >= min_logit), else
/// n_buckets + i % n_spill. Monotone: a better candidate never gets a larger
/// bucket (rounding is monotone). @return the number of candidates.
SHOAL_VOCAB_PASS
size_t bucket_tokens(const float* l, const float* p, uint16_t* bucket, size_t n, float max_logit,
                     float scale, float eps, float min_logit) noexcept {
  constexpr float last = static_cast<float>(n_buckets - 1);
  size_t n_cands = 0;
  for (size_t i = 0; i < n; ++i) {
    const float b = (max_logit - l[i]) * scale; // NaN (inf·0) clamps to last too
    const float clamped = b < last ? b : last;
    const bool cand = (p[i] >= eps) & (l[i] >= min_logit);
    const auto spill = static_cast<uint16_t>(n_buckets + i % n_spill);
    bucket[i] = cand ? static_cast<uint16_t>(static_cast<int32_t>(clamped)) : spill;
    n_cands += cand;
  }
  return n_cands;
}

} // namespace

core::result<bool> validate(const sampling_params& p) {
  if (!in_closed(p.temperature, 0.0, 2.0))
    return out_of_range("temperature", "[0, 2]", p.temperature);
  if (p.top_k < 0)
    return out_of_range("top_k", "[0, 2147483647] (0 = off)", p.top_k);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
    return out_of_range("top_p", "(0, 1]", p.top_p);
  if (!in_closed(p.min_p, 0.0, 1.0))
    return out_of_range("min_p", "[0, 1]", p.min_p);
  if (!(p.repetition_penalty > 0.0f && p.repetition_penalty <= 10.0f))
    return out_of_range("repetition_penalty", "(0, 10]", p.repetition_penalty);
  if (!in_closed(p.presence_penalty, -2.0, 2.0))
    return out_of_range("presence_penalty", "[-2, 2]", p.presence_penalty);
  if (!in_closed(p.frequency_penalty, -2.0, 2.0))
    return out_of_range("frequency_penalty", "[-2, 2]", p.frequency_penalty);
  if (!in_closed(p.penalty_last_n, -1, 1 << 20))
    return out_of_range("penalty_last_n", "[-1, 1048576]", p.penalty_last_n);
  if (!in_closed(p.n_logprobs, 0, max_n_logprobs))
    return out_of_range("n_logprobs (OpenAI top_logprobs)", "[0, 20]", p.n_logprobs);
  return true;
}

// ---- sampler -------------------------------------------------------------

core::result<sampler> sampler::create(const sampling_params& params, int32_t n_vocab) {
  if (auto ok = validate(params); !ok)
    return std::move(ok).err();
  if (n_vocab <= 0)
    return core::error{errc::invalid_argument,
                       "sampler needs a vocabulary of at least 1 token, got "
                         + std::to_string(n_vocab)};
  uint64_t seed = 0;
  if (params.seed) {
    seed = *params.seed;
  } else {
    try {
      std::random_device rd;
      seed = (static_cast<uint64_t>(rd()) << 32) ^ rd();
    } catch (const std::exception& e) {
      return core::error{errc::invalid_argument,
                         std::string("sampler: no random seed (std::random_device: ") + e.what()
                           + ")"};
    }
  }
  return sampler(params, n_vocab, seed);
}

sampler::sampler(const sampling_params& params, int32_t n_vocab, uint64_t seed)
  : params_(params), n_vocab_(n_vocab), seed_(seed), rng_(seed) {
  const auto n = static_cast<size_t>(n_vocab);
  work_.resize(n);
  probs_.resize(n);
  cands_.resize(std::min(n, list_draw_limit + 1));
  block_sums_.resize((n + draw_block - 1) / draw_block);
}

/// Uniform double in [0, 1) from the top 53 bits of one 64-bit output.
double sampler::next_uniform() noexcept {
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

/// Each distinct token of the window once; counts_ is all zero before and
/// after, so the cost is O(window), not O(n_vocab).
bool sampler::apply_penalties(std::span<float> logits, std::span<const int32_t> history) {
  const sampling_params& p = params_;
  if (logits.size() != work_.size() || p.penalty_last_n == 0 || history.empty()
      || (p.repetition_penalty == 1.0f && p.frequency_penalty == 0.0f
          && p.presence_penalty == 0.0f))
    return false;
  size_t window = history.size();
  if (p.penalty_last_n > 0)
    window = std::min(window, static_cast<size_t>(p.penalty_last_n));
  counts_.resize(work_.size()); // first use: zeros
  touched_.clear();
  for (int32_t t : history.subspan(history.size() - window)) {
    if (t < 0 || t >= n_vocab_)
      continue;
    if (counts_[static_cast<size_t>(t)]++ == 0)
      touched_.push_back(t);
  }
  for (int32_t t : touched_) {
    const auto i = static_cast<size_t>(t);
    float l = logits[i];
    if (p.repetition_penalty != 1.0f)
      l = l <= 0.0f ? l * p.repetition_penalty : l / p.repetition_penalty;
    l -= static_cast<float>(counts_[i]) * p.frequency_penalty + p.presence_penalty;
    logits[i] = l;
    counts_[i] = 0;
  }
  return !touched_.empty();
}

/// Top-p then min-p over cands_[0, n_cands), sorted best first, with top-p
/// probabilities renormalised over these candidates (llama.cpp's top-p
/// re-applies softmax to what top-k left). @return the kept prefix length
/// (>= 1).
size_t sampler::truncate_sorted(size_t n_cands, float max_logit, float min_logit) {
  size_t n_kept = n_cands;
  if (params_.top_p < 1.0f) {
    double total = 0;
    for (size_t i = 0; i < n_cands; ++i) {
      cands_[i].prob = std::exp(cands_[i].logit - max_logit);
      total += cands_[i].prob;
    }
    const double target = params_.top_p * total;
    double cum = 0;
    for (size_t i = 0; i < n_cands; ++i) {
      cum += cands_[i].prob;
      if (cum >= target) {
        n_kept = i + 1;
        break;
      }
    }
  }
  size_t i = 1; // the best token always stays
  while (i < n_kept && cands_[i].logit >= min_logit)
    ++i;
  return i;
}

/// Top-p over the whole vocabulary (top-k off), combined with min-p, using
/// the temperature-1 probabilities in probs_ (p_max = probs_[argmax]).
///
/// 0. The 64 best tokens first (select_top_k), unless 64·p_max < top_p: real
///    next-token distributions usually reach top_p within them.
/// 1. Candidates: tokens with p >= ε = (1 - top_p) / (2 n) and logit >=
///    min_logit. The others cannot be in the nucleus: those below ε hold
///    less than 1 - top_p together, so the tokens above ε already reach
///    top_p; min-p keeps a prefix of the same order, so the kept set is the
///    shorter of the two prefixes either way. One vector pass also puts each
///    candidate in one of n_buckets logit buckets spanning the candidates'
///    range, ln(p_max / ε) nats (or less under min-p).
/// 2. Up to list_draw_limit candidates: gather, sort and walk the running
///    sum of p.
/// 3. More: a histogram of mass per bucket finds the bucket where the running
///    sum reaches top_p; only that bucket's members are gathered and sorted.
///    No sort of the vocabulary.
sampler::kept_set sampler::truncate_top_p_full(float max_logit, float min_logit, int32_t argmax) {
  const size_t n = work_.size();
  const double top_p = params_.top_p;
  const float* l = work_.data();
  const float* pr = probs_.data();
  const float p_max = pr[static_cast<size_t>(argmax)];
  if (const size_t m = std::min<size_t>(n, 64); p_max * static_cast<double>(m) >= top_p) {
    select_top_k(l, n, m, cands_.data());
    double need = top_p;
    for (size_t i = 0; i < m; ++i) {
      const auto id = static_cast<size_t>(id_of(cands_[i].key));
      cands_[i].prob = pr[id];
      if (i > 0 && cands_[i].logit < min_logit)
        return {i, cands_[i - 1], false};
      need -= pr[id];
      if (need <= 0 || i + 1 == n)
        return {i + 1, cands_[i], false};
    }
  }
  const float eps = static_cast<float>((1.0 - top_p) / (2.0 * static_cast<double>(n)));
  float span = std::log(p_max / eps) + 1.0f; // candidates lie within span nats of the top
  if (min_logit > ninf)
    span = std::min(span, max_logit - min_logit);
  const float scale = span > 0 ? static_cast<float>(n_buckets) / span : 0.0f;
  bucket_.resize(n);
  const uint16_t* bucket = bucket_.data();
  const size_t n_cands = bucket_tokens(l, pr, bucket_.data(), n, max_logit, scale, eps, min_logit);

  double need = top_p;
  // Walks cands_[0, count) sorted best first: the kept length (>= 1).
  auto walk = [&](size_t count) {
    for (size_t i = 0; i < count; ++i) {
      need -= cands_[i].prob;
      if (need <= 0)
        return i + 1;
    }
    return std::max<size_t>(count, 1); // rounding or no more candidates: keep all
  };
  // Gathers the tokens with bucket <= up_to that pass `pick` into cands_, in
  // id order; blocks of 128 with no such bucket are skipped.
  auto gather = [&](uint16_t up_to, auto pick) {
    size_t len = 0;
    auto visit = [&](size_t i) {
      if (bucket[i] <= up_to && pick(bucket[i], i)) {
        if (len == cands_.size())
          cands_.resize(2 * len + 64);
        cands_[len++] = {order_key(l[i], i), l[i], pr[i]};
      }
    };
    size_t i = 0;
    for (; i + 128 <= n; i += 128)
      if (extreme_of_256_bytes<false>(bucket + i) <= up_to)
        for (size_t j = i; j < i + 128; ++j)
          visit(j);
    for (; i < n; ++i)
      visit(i);
    return len;
  };
  if (n_cands <= list_draw_limit) {
    const size_t len = gather(n_buckets - 1, [](uint16_t, size_t) { return true; });
    std::sort(cands_.begin(), cands_.begin() + static_cast<ptrdiff_t>(len), better);
    const size_t n_kept = walk(len);
    return {n_kept, cands_[n_kept - 1], false};
  }

  bucket_mass_.assign(n_histograms * n_slots, 0.0f);
  bucket_count_.assign(n_histograms * n_slots, 0);
  for (size_t i = 0; i < n; ++i) {
    const size_t slot = i % n_histograms * n_slots + bucket[i];
    bucket_mass_[slot] += pr[i];
    ++bucket_count_[slot];
  }
  // cut: the bucket where the running sum reaches top_p, or (rounding) the
  // last non-empty one; n_before and need as they stand before it.
  uint16_t cut = 0;
  size_t n_before = 0, n_seen = 0;
  double need_seen = need;
  for (uint16_t b = 0; b < n_buckets; ++b) {
    double mass = 0;
    size_t count = 0;
    for (size_t h = 0; h < n_histograms; ++h) {
      mass += bucket_mass_[h * n_slots + b];
      count += bucket_count_[h * n_slots + b];
    }
    if (count == 0)
      continue;
    cut = b;
    n_before = n_seen;
    need = need_seen;
    if (need_seen <= mass)
      break;
    need_seen -= mass;
    n_seen += count;
  }
  const size_t len = gather(cut, [cut](uint16_t b, size_t) { return b == cut; });
  const auto first = cands_.begin(), last = first + static_cast<ptrdiff_t>(len);
  const auto [lo, hi] = std::minmax_element(
    first, last, [](const auto& a, const auto& b) { return a.logit < b.logit; });
  if (lo->logit != hi->logit) // equal logits: id order already is key order
    std::sort(first, last, better);
  const size_t n_in = walk(len);
  const sampler_candidate worst = cands_[n_in - 1];
  const size_t n_kept = n_before + n_in;
  if (n_kept > list_draw_limit)
    return {n_kept, worst, false};
  const size_t n_listed = gather(cut, [cut, &worst, l](uint16_t b, size_t i) {
    return b < cut || order_key(l[i], i) >= worst.key;
  });
  return {n_listed, worst, true};
}

/// Draws from cands_[0, n_kept), sorted by id, with weights
/// exp((logit - max_logit) / T): u·Σw is located in the running sum in id
/// order.
int32_t sampler::draw_from_list(size_t n_kept, float max_logit) {
  const float t = params_.temperature;
  weights_.resize(n_kept);
  double total = 0;
  for (size_t i = 0; i < n_kept; ++i) {
    weights_[i] = std::exp((cands_[i].logit - max_logit) / t);
    total += weights_[i];
  }
  const double target = next_uniform() * total;
  double cum = 0;
  int32_t last = id_of(cands_[0].key);
  for (size_t i = 0; i < n_kept; ++i) {
    if (weights_[i] <= 0)
      continue;
    last = id_of(cands_[i].key);
    cum += weights_[i];
    if (target < cum)
      return last;
  }
  return last; // u·Σw rounded up to Σw
}

/// Draws from every token at or better than (boundary_logit, boundary_id) in
/// the chain's order, in id order: probs_ = softmax((l - max_logit) / T) over
/// the kept tokens (others 0; kept weights below e^-60 count as e^-60, see
/// softmax_floor_nats), block sums of 256 locate u·Σ, a short walk finds the
/// token. At temperature 1 a probs_ that already holds softmax(work_)
/// (`probs_is_t1`) is reused.
int32_t sampler::draw_dense(float max_logit, float boundary_logit, size_t boundary_id,
                            bool probs_is_t1) {
  const auto n = static_cast<int32_t>(work_.size());
  const auto bid = static_cast<int32_t>(std::min<size_t>(boundary_id, work_.size()));
  float* pr = probs_.data();
  if (!probs_is_t1 || params_.temperature != 1.0f) {
    temperature_logits(work_.data(), pr, n, max_logit, params_.temperature, boundary_logit, bid);
    kernels::softmax(probs_, probs_);
  }
  const double total = mask_and_sum_blocks(work_.data(), pr, n, boundary_logit, bid,
                                           block_sums_.data(), block_sums_.size());
  const double target = next_uniform() * total;
  double cum = 0;
  size_t b = 0;
  while (b + 1 < block_sums_.size() && cum + block_sums_[b] <= target)
    cum += block_sums_[b++];
  int32_t last = -1;
  for (size_t i = b * draw_block; i < work_.size(); ++i) {
    if (pr[i] <= 0)
      continue;
    last = static_cast<int32_t>(i);
    cum += pr[i];
    if (target < cum)
      return last;
  }
  if (last >= 0)
    return last;
  // Rounding put the target past the last block's tokens: the last kept one.
  for (size_t i = b * draw_block; i-- > 0;)
    if (pr[i] > 0)
      return static_cast<int32_t>(i);
  return bid; // unreachable: the top token is always kept
}

/// Final step: temperature and the draw over the kept set.
int32_t sampler::draw(const kept_set& kept, float max_logit, bool probs_is_t1) {
  if (kept.n > list_draw_limit)
    return draw_dense(max_logit, kept.worst.logit, static_cast<size_t>(id_of(kept.worst.key)),
                      probs_is_t1);
  if (!kept.sorted_by_id)
    std::sort(cands_.begin(), cands_.begin() + static_cast<ptrdiff_t>(kept.n), lower_id);
  return draw_from_list(kept.n, max_logit);
}

/// The raw part shared by `sample` and `score`: sanitizes the logits into
/// work_, computes the raw log-softmax (probs_ holds the softmax after) and
/// fills out.top_logprobs. Errors: logits of the wrong size, none finite.
core::result<sampler::raw_scores> sampler::score_raw(std::span<const float> logits,
                                                     sampled_token& out) {
  const size_t n = work_.size();
  if (logits.size() != n)
    return core::error{errc::invalid_argument, "sampler: got " + std::to_string(logits.size())
                                                 + " logits for a vocabulary of "
                                                 + std::to_string(n)};
  const logit_range raw = sanitize(logits.data(), work_.data(), n);
  if (raw.max == ninf)
    return core::error{errc::invalid_argument, "sampler: every logit is -inf or NaN"};
  // Raw log-softmax: log p_i = (l_i - max) + log p_max, exact to float
  // rounding even where p_i itself underflows.
  softmax_floored(probs_, work_, raw);
  const raw_scores rs{raw.min, raw.max, raw.argmax,
                      std::log(probs_[static_cast<size_t>(raw.argmax)])};
  if (params_.n_logprobs > 0) {
    const size_t k = std::min(n, static_cast<size_t>(params_.n_logprobs));
    select_top_k(work_.data(), n, k, cands_.data()); // cands_ holds >= min(n, 1025)
    out.top_logprobs.reserve(k);
    for (size_t i = 0; i < k; ++i)
      out.top_logprobs.emplace_back(id_of(cands_[i].key), rs.logprob(cands_[i].logit));
  }
  return rs;
}

core::result<sampled_token> sampler::score(std::span<const float> logits, int32_t id) {
  const size_t n = work_.size();
  if (id < 0 || static_cast<size_t>(id) >= n)
    return core::error{errc::invalid_argument, "sampler: token " + std::to_string(id)
                                                 + " is outside the vocabulary of "
                                                 + std::to_string(n)};
  sampled_token out;
  auto rs = score_raw(logits, out);
  if (!rs)
    return std::move(rs).err();
  out.id = id;
  out.logprob = rs->logprob(sanitize1(logits[static_cast<size_t>(id)]));
  return out;
}

core::result<sampled_token> sampler::sample(std::span<const float> logits,
                                            std::span<const int32_t> history) {
  const size_t n = work_.size();
  sampled_token out;
  auto scores = score_raw(logits, out);
  if (!scores)
    return std::move(scores).err();
  const raw_scores& rs = *scores;
  const logit_range raw{rs.min, rs.max, rs.argmax};

  logit_range range = raw;
  const bool penalised = apply_penalties(work_, history);
  if (penalised) {
    range = sanitize(work_.data(), work_.data(), n);
    if (range.max == ninf)
      return core::error{errc::invalid_argument, "sampler: every logit is -inf after penalties"};
  }

  const sampling_params& p = params_;
  const float max_logit = range.max;
  const float min_logit = p.min_p > 0.0f ? max_logit + std::log(p.min_p) : ninf;
  const auto k = static_cast<size_t>(p.top_k);
  if (p.temperature == 0.0f) {
    out.id = range.argmax;
  } else if (k > 0 && k < n) {
    if (cands_.size() < k)
      cands_.resize(k);
    select_top_k(work_.data(), n, k, cands_.data());
    const size_t n_kept = truncate_sorted(k, max_logit, min_logit);
    out.id = draw({n_kept, cands_[n_kept - 1], false}, max_logit, !penalised);
  } else if (p.top_p < 1.0f) {
    if (penalised)
      softmax_floored(probs_, work_, range); // else probs_ already holds it
    out.id = draw(truncate_top_p_full(max_logit, min_logit, range.argmax), max_logit, true);
  } else if (p.min_p > 0.0f) {
    size_t len = 0; // gather up to list_draw_limit + 1 in id order
    for (size_t i = 0; i < n && len <= list_draw_limit; ++i)
      if (work_[i] >= min_logit)
        cands_[len++] = {order_key(work_[i], i), work_[i], 0.0f};
    // Boundary: every id at min_logit.
    out.id = len > list_draw_limit ? draw_dense(max_logit, min_logit, n, !penalised)
                                   : draw_from_list(len, max_logit);
  } else {
    out.id = draw_dense(max_logit, ninf, n, !penalised); // everything
  }
  out.logprob = rs.logprob(sanitize1(logits[static_cast<size_t>(out.id)]));
  return out;
}

// ---- stop_matcher --------------------------------------------------------

core::result<stop_matcher> stop_matcher::create(std::span<const std::string> stops) {
  if (stops.size() > max_stop_strings)
    return core::error{errc::invalid_argument, "stop: at most " + std::to_string(max_stop_strings)
                                                 + " strings, got " + std::to_string(stops.size())};
  for (size_t i = 0; i < stops.size(); ++i) {
    if (stops[i].empty())
      return core::error{errc::invalid_argument, "stop[" + std::to_string(i) + "] is empty"};
    if (stops[i].size() > max_stop_bytes)
      return core::error{errc::invalid_argument,
                         "stop[" + std::to_string(i) + "] is " + std::to_string(stops[i].size())
                           + " bytes, the limit is " + std::to_string(max_stop_bytes)};
  }
  return stop_matcher(std::vector<std::string>(stops.begin(), stops.end()));
}

stop_matcher::stop_matcher(std::vector<std::string> stops)
  : stops_(std::move(stops)), failure_(stops_.size()), state_(stops_.size(), 0) {
  // failure[j] = length of the longest proper border of s[0, j].
  for (size_t k = 0; k < stops_.size(); ++k) {
    const std::string& s = stops_[k];
    std::vector<uint32_t>& f = failure_[k];
    f.assign(s.size(), 0);
    uint32_t q = 0;
    for (size_t j = 1; j < s.size(); ++j) {
      while (q > 0 && s[j] != s[q])
        q = f[q - 1];
      if (s[j] == s[q])
        ++q;
      f[j] = q;
    }
  }
}

stop_matcher::step stop_matcher::feed(std::string_view piece) {
  out_.clear();
  if (stopped())
    return {out_, true, stop_index_};
  const size_t base = held_.size();
  held_.append(piece);
  for (size_t pos = base; pos < held_.size(); ++pos) {
    const char c = held_[pos];
    int32_t best = -1;
    for (size_t k = 0; k < stops_.size(); ++k) {
      const std::string& s = stops_[k];
      uint32_t q = state_[k];
      while (q > 0 && s[q] != c)
        q = failure_[k][q - 1];
      if (s[q] == c)
        ++q;
      state_[k] = q;
      if (q == s.size() && (best < 0 || s.size() > stops_[static_cast<size_t>(best)].size()))
        best = static_cast<int32_t>(k);
    }
    if (best >= 0) {
      const size_t start = pos + 1 - stops_[static_cast<size_t>(best)].size();
      out_.assign(held_, 0, start);
      held_.clear();
      std::fill(state_.begin(), state_.end(), 0);
      stop_index_ = best;
      return {out_, true, best};
    }
  }
  uint32_t hold = 0;
  for (uint32_t q : state_)
    hold = std::max(hold, q);
  const size_t emit = held_.size() - hold;
  out_.assign(held_, 0, emit);
  held_.erase(0, emit);
  return {out_, false, -1};
}

std::string_view stop_matcher::finish() {
  out_.clear();
  if (stopped())
    return out_;
  out_.swap(held_);
  held_.clear();
  std::fill(state_.begin(), state_.end(), 0);
  return out_;
}

} // namespace shoal::engine
