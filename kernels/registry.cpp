#include "kernels/registry.hpp"

#include <algorithm>
#include <cstdio>

namespace shoal::kernels {

kernel_base::kernel_base(const char* name, const char* signature)
  : name_(name), signature_(signature) {
  registry::instance().add(this);
}

void kernel_base::add(variant_info info, erased_fn fn) {
  registry::instance().add_variant(this, std::move(info), fn);
}

std::vector<variant_info> kernel_base::variants() const {
  std::lock_guard<std::mutex> lock(registry::instance().mutex_);
  std::vector<variant_info> out;
  for (const entry& e : entries_)
    out.push_back(e.info);
  return out;
}

erased_fn kernel_base::fn_at(size_t i) const {
  std::lock_guard<std::mutex> lock(registry::instance().mutex_);
  return i < entries_.size() ? entries_[i].fn : nullptr;
}

std::string kernel_base::active_name() const {
  std::lock_guard<std::mutex> lock(registry::instance().mutex_);
  return entries_.empty() ? std::string{} : entries_[active_index_].info.name;
}

std::string kernel_base::reason() const {
  std::lock_guard<std::mutex> lock(registry::instance().mutex_);
  return reason_;
}

namespace {

std::string format_ns(double ns) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f ns", ns);
  return buf;
}

} // namespace

void kernel_base::select() {
  isa level = active_isa();
  // Fastest measured runnable variant, if any was measured.
  size_t best = entries_.size();
  for (size_t i = 0; i < entries_.size(); ++i) {
    const variant_info& v = entries_[i].info;
    if (v.needs > level || v.ns_per_call < 0)
      continue;
    if (best == entries_.size() || v.ns_per_call < entries_[best].info.ns_per_call)
      best = i;
  }
  if (best != entries_.size()) {
    std::string others;
    for (size_t i = 0; i < entries_.size(); ++i)
      if (i != best && entries_[i].info.needs <= level && entries_[i].info.ns_per_call >= 0)
        others += (others.empty() ? "; " : ", ") + entries_[i].info.name + ' '
                  + format_ns(entries_[i].info.ns_per_call);
    reason_ = "fastest measured (" + entries_[best].info.name + ' '
              + format_ns(entries_[best].info.ns_per_call) + others + ")";
  } else {
    for (size_t i = 0; i < entries_.size(); ++i) {
      const variant_info& v = entries_[i].info;
      if (v.needs > level)
        continue;
      if (best == entries_.size() || v.needs >= entries_[best].info.needs)
        best = i;
    }
    if (best == entries_.size())
      best = 0; // unreachable: every kernel has a scalar variant
    reason_ = "widest level usable (" + std::string(to_string(entries_[best].info.needs)) + "; cpu "
              + std::string(to_string(cpu().level)) + ", cap " + std::string(to_string(isa_cap()))
              + " from " + std::string(isa_cap_source()) + ")";
    if (entries_[best].info.origin != "built-in")
      reason_ += ", from pack " + entries_[best].info.origin;
  }
  active_index_ = best;
  active_.store(entries_[best].fn, std::memory_order_relaxed);
}

void kernel_base::tune() {
  isa level = active_isa();
  for (entry& e : entries_)
    if (e.info.needs <= level)
      e.info.ns_per_call = measure(e.fn);
  select();
}

registry& registry::instance() {
  static registry r;
  return r;
}

void registry::add(kernel_base* k) {
  std::lock_guard<std::mutex> lock(mutex_);
  kernels_.push_back(k);
}

void registry::add_variant(kernel_base* k, variant_info info, erased_fn fn) {
  std::lock_guard<std::mutex> lock(mutex_);
  info.runnable = info.needs <= cpu().level;
  // A kernel already tuned measures a late (pack) variant too, so that the
  // comparison stays fair.
  bool tuned = std::any_of(k->entries_.begin(), k->entries_.end(),
                           [](const kernel_base::entry& e) { return e.info.ns_per_call >= 0; });
  if (tuned && info.needs <= active_isa())
    info.ns_per_call = k->measure(fn);
  k->entries_.push_back({std::move(info), fn});
  k->select();
}

std::vector<const kernel_base*> registry::kernels() {
  register_builtin_kernels();
  std::lock_guard<std::mutex> lock(mutex_);
  return {kernels_.begin(), kernels_.end()};
}

kernel_base* registry::find(std::string_view name) {
  register_builtin_kernels();
  std::lock_guard<std::mutex> lock(mutex_);
  for (kernel_base* k : kernels_)
    if (k->name() == name)
      return k;
  return nullptr;
}

void registry::reselect() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (kernel_base* k : kernels_)
    k->select();
}

size_t registry::tune(std::string_view name) {
  register_builtin_kernels();
  std::lock_guard<std::mutex> lock(mutex_);
  size_t n = 0;
  for (kernel_base* k : kernels_) {
    if (!name.empty() && k->name() != name)
      continue;
    k->tune();
    ++n;
  }
  return n;
}

void registry::clear_measurements() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (kernel_base* k : kernels_) {
    for (kernel_base::entry& e : k->entries_)
      e.info.ns_per_call = -1;
    k->select();
  }
}

std::string registry::describe() {
  auto list = kernels();
  const cpu_features& f = cpu();
  std::string out = "cpu: " + f.flags() + "\nlevel: " + std::string(to_string(f.level)) + ", cap "
                    + std::string(to_string(isa_cap())) + " (" + std::string(isa_cap_source())
                    + "), dispatching to " + std::string(to_string(active_isa())) + "\n\n";
  for (const kernel_base* k : list) {
    std::string names;
    for (const variant_info& v : k->variants()) {
      names += names.empty() ? "" : ", ";
      names += v.name;
      if (!v.runnable)
        names += " (cpu lacks " + std::string(to_string(v.needs)) + ")";
      else if (v.ns_per_call >= 0)
        names += ' ' + format_ns(v.ns_per_call);
    }
    out +=
      k->name() + ": " + k->active_name() + " — " + k->reason() + "\n    variants: " + names + '\n';
  }
  return out;
}

void register_builtin_kernels() {
  static const bool done = [] {
    register_vector_kernels();
    register_quant_kernels();
    register_matmul_kernels();
    register_nn_kernels();
    register_learn_kernels();
    return true;
  }();
  (void)done;
}

} // namespace shoal::kernels
