-- Shared by every scenario: seeded randomness per thread, per-status counts,
-- a JSON summary on stdout for bench/run.py. Arguments: key=value after "--".
local M = {}
local threads = {}

function M.setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function M.init(args)
  opts = {}
  for _, arg in ipairs(args) do
    local k, v = arg:match("^([%w_]+)=(.*)$")
    if k then opts[k] = tonumber(v) or v end
  end
  math.randomseed((opts.seed or 1) * 1000 + id)
  statuses = {}
  sent = 0
end

function M.response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function M.day(offset)
  return os.date("!%Y-%m-%d", (opts.today + offset) * 86400)
end

function M.iso(epoch)
  return os.date("!%Y-%m-%dT%H:%M:%S+00:00", epoch)
end

-- request_token: set by timed.lua to pair a response with its request (sent as
-- X-Request-ID, which the service echoes); nil otherwise.
function M.get(path)
  sent = sent + 1
  if request_token then
    return wrk.format("GET", path, { ["X-Request-ID"] = request_token })
  end
  return wrk.format("GET", path)
end

-- GET /users/{id} with every relation the dashboard shows.
function M.user()
  last_user = math.random(1, opts.users)
  return M.get("/api/v1/users/" .. last_user .. "?include=appointments,payments,organizations")
end

-- A barber's week, in the month around today where bookings are confirmed.
function M.barber()
  local first = math.random(-7, 23)
  return M.get(string.format("/api/v1/barbers/%d/appointments?start=%s&end=%s",
    math.random(1, opts.barbers), M.day(first), M.day(first + 6)))
end

-- A location's revenue over a calendar month of the last ~22 months.
function M.revenue()
  local t = os.date("!*t", (opts.today - 30 * math.random(1, 22)) * 86400)
  local last = os.date("!*t", os.time({year = t.year, month = t.month + 1, day = 0, hour = 12}))
  return M.get(string.format("/api/v1/locations/%d/revenue?start=%04d-%02d-01&end=%04d-%02d-%02d",
    math.random(1, opts.locations), t.year, t.month, t.year, t.month, last.day))
end

-- A booking nobody else takes, valid under the booking rules: request n of the run
-- books barber n mod barbers at their own location, in the half hour n div barbers
-- after `base` (a month ahead, further per wrk run), for a client no other booking of
-- that half hour has, with the location's first service (30 minutes).
function M.write()
  sent = sent + 1
  local n = sent * 4 + id
  local barber = n % opts.barbers + 1
  local location = (barber - 1) % opts.locations + 1
  local slot = opts.base + math.floor(n / opts.barbers) * 1800
  local client = opts.clients_from + n % (opts.users - opts.clients_from + 1)
  local body = string.format(
    '{"user_id":%d,"barber_id":%d,"service_id":%d,"location_id":%d,'
    .. '"start_time":"%s","end_time":"%s","notes":"bench"}',
    client, barber, (location - 1) * 5 + 1, location, M.iso(slot), M.iso(slot + 1800))
  return wrk.format("POST", "/api/v1/appointments",
    {["Content-Type"] = "application/json", ["X-Request-ID"] = request_token}, body)
end

local function percentile(latency, p)
  return latency:percentile(p) / 1000.0
end

-- Every thread's responses by status, as the inside of a JSON object.
function M.statuses_json()
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses") or {}) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%d":%d', status, n))
  end
  return table.concat(parts, ",")
end

function M.done(summary, latency, requests)
  opts = threads[1]:get("opts") -- done() runs in wrk's main state, which init() never saw
  if opts.timed == 1 then
    return require("timed").done(threads, summary, M.statuses_json())
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_ms":%.3f,"p95_ms":%.3f,"p99_ms":%.3f,'
    .. '"p90_ms":%.3f,"p999_ms":%.3f,'
    .. '"mean_ms":%.3f,"max_ms":%.3f,"connect":%d,"read":%d,"write":%d,"timeout":%d,'
    .. '"status_errors":%d,"bytes":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration, percentile(latency, 50), percentile(latency, 95),
    percentile(latency, 99), percentile(latency, 90), percentile(latency, 99.9),
    latency.mean / 1000.0, latency.max / 1000.0, e.connect, e.read,
    e.write, e.timeout, e.status, summary.bytes, M.statuses_json()))
end

-- Wires the hooks of a scenario whose request() is `make`.
-- With timed=1 (mixed.lua at 10,000 connections) timed.lua times each request in Lua.
function M.scenario(make)
  setup, done = M.setup, M.done
  local timed = require("timed")
  init = function(args)
    M.init(args)
    if opts.timed == 1 then
      timed.init()
      local user_only = opts.mix == "user"
      request = function() return timed.request(make, user_only) end
      response = function(status, headers, body)
        M.response(status, headers, body)
        timed.response(status, headers, body)
      end
    end
  end
  request, response = make, M.response
end

return M
