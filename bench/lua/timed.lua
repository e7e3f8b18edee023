-- Latencies timed in Lua, for a run whose first `warm` seconds are a warm-up inside the
-- same wrk process (wrk's own histogram cannot leave them out). mixed.lua uses it when
-- run with timed=1. Each response is paired with its request: the user read by the user
-- id its body starts with (the request is byte for byte the untimed one), any other
-- request by an X-Request-ID the server echoes. Per thread it keeps the measured
-- latencies and, per 100 ms of send time, requests, latency sum and max and those over
-- 100 ms, warm-up included; done() merges the threads, prints BENCH_JSON for the
-- measured window (as common.lua does) plus the first `storm` seconds (the 10,000 new
-- connections), and writes the time series to opts.series when given.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local T = {}
local by_key = {} -- key -> FIFO of start times (two in-flight reads of one user)
local tokens = 0

function T.init()
  start_ms = now_ms()
  measured, storm = {}, {}
  -- Per bucket (100 ms of monotonic time): requests, latency sum and max, those over
  -- 100 ms. Flat tables: wrk's thread:get corrupts its stack copying nested ones.
  s_n, s_sum, s_max, s_slow = {}, {}, {}, {}
  unpaired = 0
end

local function push(key, t)
  local q = by_key[key]
  if q == nil then by_key[key] = { t } else q[#q + 1] = t end
end

-- The request, keyed: the user read by its user id (common.lua's last_user), anything
-- else by a fresh token common.lua sends as X-Request-ID.
function T.request(make, user_only)
  if user_only then
    local req = make()
    push(last_user, now_ms())
    return req
  end
  tokens = tokens + 1
  local token = id .. "-" .. tokens
  request_token = token
  local req = make()
  request_token = nil
  push(token, now_ms())
  return req
end

function T.response(status, headers, body)
  local t = now_ms()
  local key = headers["x-request-id"] or headers["X-Request-ID"]
  if key == nil or by_key[key] == nil then
    key = body and body:match('^{"id":(%d+)')
    key = key and tonumber(key)
  end
  local q = key and by_key[key]
  if q == nil then
    unpaired = unpaired + 1
    return
  end
  local sent = table.remove(q, 1)
  if #q == 0 then by_key[key] = nil end
  local ms = t - sent
  local b = math.floor(sent / 100)
  s_n[b] = (s_n[b] or 0) + 1
  s_sum[b] = (s_sum[b] or 0) + ms
  if ms > (s_max[b] or 0) then s_max[b] = ms end
  if ms > 100 then s_slow[b] = (s_slow[b] or 0) + 1 end
  local since = (sent - start_ms) / 1000
  if since >= (opts.warm or 0) then measured[#measured + 1] = ms end
  if since < (opts.storm or 0) then storm[#storm + 1] = ms end
end

local function pct(sorted, p)
  if #sorted == 0 then return 0 end
  return sorted[math.max(1, math.ceil(#sorted * p / 100))]
end

local function summary(list, seconds)
  table.sort(list)
  local sum = 0
  for _, v in ipairs(list) do sum = sum + v end
  return string.format(
    '{"requests":%d,"duration_us":%d,"p50_ms":%.3f,"p90_ms":%.3f,"p95_ms":%.3f,'
    .. '"p99_ms":%.3f,"p999_ms":%.3f,"mean_ms":%.3f,"max_ms":%.3f',
    #list, seconds * 1e6, pct(list, 50), pct(list, 90), pct(list, 95), pct(list, 99),
    pct(list, 99.9), #list > 0 and sum / #list or 0, list[#list] or 0)
end

function T.done(threads, summary_, statuses_json)
  local all, early, merged, lost, first = {}, {}, {}, 0, math.huge
  for _, thread in ipairs(threads) do
    for _, v in ipairs(thread:get("measured")) do all[#all + 1] = v end
    for _, v in ipairs(thread:get("storm")) do early[#early + 1] = v end
    lost = lost + thread:get("unpaired")
    first = math.min(first, thread:get("start_ms"))
    local n, sum, max, slow = thread:get("s_n"), thread:get("s_sum"), thread:get("s_max"),
      thread:get("s_slow")
    for b, count in pairs(n) do
      local m = merged[b]
      if m == nil then
        m = { 0, 0, 0, 0 }
        merged[b] = m
      end
      m[1], m[2], m[4] = m[1] + count, m[2] + sum[b], m[4] + (slow[b] or 0)
      if max[b] > m[3] then m[3] = max[b] end
    end
  end
  local total = summary_.duration / 1e6
  local e = summary_.errors
  io.write("BENCH_JSON ", summary(all, total - (opts.warm or 0)), string.format(
    ',"connect":%d,"read":%d,"write":%d,"timeout":%d,"status_errors":%d,"bytes":%d,'
    .. '"unpaired":%d,"statuses":{%s},"storm":%s}\n',
    e.connect, e.read, e.write, e.timeout, e.status,
    -- wrk counts the bytes of the whole run: those of the measured responses, pro rata
    math.floor(summary_.bytes * #all / math.max(1, summary_.requests)), lost, statuses_json,
    summary(early, opts.storm or 0) .. "}"))
  if opts.series then
    local keys = {}
    for b in pairs(merged) do keys[#keys + 1] = b end
    table.sort(keys)
    local f = io.open(opts.series, "w")
    f:write("t_s\trequests\tmean_ms\tmax_ms\tover_100ms\n")
    for _, b in ipairs(keys) do
      local m = merged[b]
      f:write(string.format("%.1f\t%d\t%.2f\t%.1f\t%d\n",
        b / 10 - first / 1000, m[1], m[2] / m[1], m[3], m[4]))
    end
    f:close()
  end
end

return T
