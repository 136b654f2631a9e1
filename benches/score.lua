-- wrk script for POST /v1/score: 5 candidates for a user drawn uniformly from
-- u0 .. u(BENCH_USERS-1), at a fixed time outside quiet hours, with the scheduler token.
local users = tonumber(os.getenv("BENCH_USERS") or "2000")
local token = os.getenv("BENCH_TOKEN") or "bench-scheduler-token"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token
local template = '{"user_id":"u%d","now":"2026-11-22T12:00:00Z","timezone":"UTC","candidates":['
  .. '{"id":"n-1","type":"contact_reminder"},{"id":"n-2","type":"weekly_digest"},'
  .. '{"id":"n-3","type":"re_engagement"},{"id":"n-4","type":"suggested_contact"},'
  .. '{"id":"n-5","type":"contact_reminder"}]}'
math.randomseed(1)
request = function()
  return wrk.format(nil, nil, nil, string.format(template, math.random(0, users - 1)))
end
