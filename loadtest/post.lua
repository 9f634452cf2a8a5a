-- wrk script: small non-streaming completions with zero generated tokens.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"prompt":"Hello","n_predict":0}'

-- Count non-2xx answers so a run that only measured 503s is visible.
local bad = 0
response = function(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("non-2xx: %d\n", summary.requests - (summary.requests - bad)))
end
