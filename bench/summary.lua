-- wrk script: prints one machine-readable summary line at the end of a run.
-- Used alone for GET /healthz (the HTTP server's floor) and loaded by
-- route.lua. Runs from the repository root (bench/http_route.sh cds there).
function done(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
                 + summary.errors.write + summary.errors.timeout
  io.write(string.format("wrk-summary requests=%d errors=%d p50_us=%d p99_us=%d\n",
                         summary.requests, errors, latency:percentile(50),
                         latency:percentile(99)))
end
