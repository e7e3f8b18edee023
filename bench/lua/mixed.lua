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

function delay()
  return math.random(0, 2 * (opts.interval or 0))
end
