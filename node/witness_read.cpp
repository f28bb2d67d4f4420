#include "node/witness_read.hpp"

#include "proto/records.hpp"
#include "store/archive.hpp"

#include <nlohmann/json.hpp>

namespace shoal::node {

namespace {

nlohmann::json to_json(const proto::witness_entry& w) {
  const auto& d = w.decision;
  auto optional = [](double x) { return x >= 0 ? nlohmann::json(x) : nlohmann::json(nullptr); };
  return {{"request_id", proto::format_request_id(d.request_id)},
          {"time_ms", d.time_ms},
          {"tier", d.tier_name},
          {"tier_index", d.tier},
          {"confidence", d.confidence},
          {"pattern_id", d.pattern_id},
          {"new_pattern", d.new_pattern},
          {"session_id", w.session_id},
          {"user", w.user},
          {"text_bytes", w.text_bytes},
          {"latency_budget_ms", w.latency_budget_ms},
          {"temperature", optional(d.temperature)},
          {"top_p", optional(d.top_p)},
          {"context_tokens", d.context_tokens},
          {"prompt_tokens", w.prompt_tokens},
          {"completion_tokens", w.completion_tokens},
          {"feedback", w.has_feedback
                         ? nlohmann::json{{"quality", w.quality}, {"time_ms", w.feedback_ms}}
                         : nlohmann::json(nullptr)}};
}

} // namespace

int witness_read(const std::vector<std::string>& files, std::ostream& out, std::ostream& err) {
  int rc = 0;
  for (const auto& f : files) {
    auto seg = store::read_archive(f);
    if (!seg) {
      err << "shoal: " << seg.err().message << '\n';
      rc = 1;
      continue;
    }
    if (seg->source != store::table::witness) {
      err << "shoal: " << f << ": holds records of table '" << store::to_string(seg->source)
          << "', not the witness log\n";
      rc = 1;
      continue;
    }
    for (const auto& r : seg->records) {
      auto w = proto::decode_witness(r.value);
      if (!w) {
        err << "shoal: " << f << ": record " << proto::format_request_id(r.key) << ": "
            << w.err().message << '\n';
        rc = 1;
        continue;
      }
      out << to_json(*w).dump() << '\n';
    }
  }
  return rc;
}

} // namespace shoal::node
