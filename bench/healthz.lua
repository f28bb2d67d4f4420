-- wrk script for the baseline: GET /healthz (the HTTP server's floor).
function done(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
                 + summary.errors.write + summary.errors.timeout
  io.write(string.format("wrk-summary requests=%d errors=%d p50_us=%d p99_us=%d\n",
                         summary.requests, errors, latency:percentile(50),
                         latency:percentile(99)))
end
