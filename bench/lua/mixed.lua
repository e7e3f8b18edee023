-- mix=all: 90% reads (a third each), 10% writes; mix=reads: the reads only;
-- mix=user: the user read only; mix=writes: bookings only. Every connection waits a random 0..2*interval ms
-- before each request, so C connections send ~C*1000/interval req/s.
local dir = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local bench = require("common")
bench.scenario(function()
  if opts.mix == "writes" then return bench.write() end
  if opts.mix == "user" then return bench.user() end
  local roll = opts.mix == "reads" and math.random() * 0.9 or math.random()
  if roll < 0.3 then return bench.user() end
  if roll < 0.6 then return bench.barber() end
  if roll < 0.9 then return bench.revenue() end
  return bench.write()
end)

-- The first wait of each of this thread's connections is drawn from the stationary
-- distribution of the time to a connection's next request (density falling linearly
-- from 0 to 2*interval), so the measured window opens as if the load had been running:
-- C connections send C*1000/interval req/s from the first second. Later waits are
-- uniform in 0..2*interval.
local first_waits = 0
function delay()
  local interval = opts.interval or 0
  if first_waits < (opts.per_thread or 0) then
    first_waits = first_waits + 1
    return math.floor(2 * interval * (1 - math.sqrt(1 - math.random())))
  end
  return math.random(0, 2 * interval)
end
