-- wrk script for scripts/bench-e2e: every request is the first buy of a
-- distinct user. Each wrk thread holds only its own share of the tokens (a
-- large Lua table in every thread puts garbage-collection pauses into the
-- measured tail), and a request is one concatenation around its token:
-- `wrk.format` built a table and several strings per request, ~2 µs of
-- wrk's CPU that the servers' cores did not get (PERFORMANCE.md). The bytes
-- sent are the same as `wrk.format`'s.
--
--   wrk -t2 -c64 -d8s -s scripts/wrk-buy.lua URL -- TOKENS_FILE PATH THREADS
--
-- TOKENS_FILE: one JWT per line (`seckill token --user 1 --count N`).
-- PATH: e.g. /api/v1/activities/7/buy. THREADS: the -t value.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local file, path, nthreads = args[1], args[2], tonumber(args[3])
  local body = '{"quantity":1}'
  head = "POST " .. path .. " HTTP/1.1\r\nAuthorization: Bearer "
  tail = "\r\nHost: " .. wrk.headers["Host"] .. "\r\nContent-Type: application/json\r\nContent-Length: "
    .. #body .. "\r\n\r\n" .. body
  tokens = {}
  local i = 0
  for line in io.lines(file) do
    if i % nthreads == id then
      tokens[#tokens + 1] = line
    end
    i = i + 1
  end
  next_token = 1
end

function request()
  -- Past the last token the users repeat (answered 409 limit_reached): the
  -- bench counts durable buys from each system's own stock, not from wrk.
  local token = tokens[next_token]
  next_token = next_token % #tokens + 1
  return head .. token .. tail
end
