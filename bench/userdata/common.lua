-- Shared by get.lua and put.lua (wrk 4.1, LuaJIT). Environment:
--   BENCH_IDS    file with one seeded user per line: "<id> <username> <email>"
--   BENCH_TOKEN  a Bearer token with users:read users:write
-- done() prints one machine-readable line that run.sh parses:
--   WRK requests=N duration_s=S rps=R p50_ms=.. p90_ms=.. p99_ms=.. max_ms=.. errors=E non2xx=M

users = {}

local function load_users()
   local path = os.getenv("BENCH_IDS") or error("BENCH_IDS is not set")
   local f = assert(io.open(path, "r"))
   for line in f:lines() do
      local id, username, email = line:match("^(%S+)%s+(%S+)%s+(%S+)")
      if id then users[#users + 1] = {id = id, username = username, email = email} end
   end
   f:close()
   assert(#users > 0, "no users in " .. path)
end

wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_TOKEN") or error("BENCH_TOKEN is not set"))

local counter = 0
function setup(thread)
   counter = counter + 1
   thread:set("thread_no", counter)
end

function init(args)
   load_users()
   math.randomseed(os.time() * 1000 + (thread_no or 0) * 7919)
   for _ = 1, 10 do math.random() end
end

function random_user()
   return users[math.random(#users)]
end

function done(summary, latency, requests)
   local e = summary.errors
   local secs = summary.duration / 1e6
   io.write(string.format(
      "WRK requests=%d duration_s=%.2f rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f errors=%d non2xx=%d\n",
      summary.requests, secs, summary.requests / secs,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
      latency.max / 1000, e.connect + e.read + e.write + e.timeout, e.status))
end
