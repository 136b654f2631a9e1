-- wrk script for POST /v1/score: 5 candidates for a user drawn uniformly from
-- u0 .. u(BENCH_USERS-1), at a fixed time outside quiet hours, with the scheduler token.
-- Each user's request is formatted once, at start: wrk shares the machine with the
-- server, and building the text on every request cost it about 3 us of CPU a request
-- (BENCHMARKS.md, "Scoring load").
local users = tonumber(os.getenv("BENCH_USERS") or "2000")
local token = os.getenv("BENCH_TOKEN") or "bench-scheduler-token"
local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer " .. token,
}
local template = '{"user_id":"u%d","now":"2026-11-22T12:00:00Z","timezone":"UTC","candidates":['
  .. '{"id":"n-1","type":"contact_reminder"},{"id":"n-2","type":"weekly_digest"},'
  .. '{"id":"n-3","type":"re_engagement"},{"id":"n-4","type":"suggested_contact"},'
  .. '{"id":"n-5","type":"contact_reminder"}]}'
local requests = {}
for user = 0, users - 1 do
  requests[user + 1] = wrk.format("POST", nil, headers, string.format(template, user))
end
math.randomseed(1)
request = function()
  return requests[math.random(1, users)]
end
