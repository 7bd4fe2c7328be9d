-- wrk script for scripts/bench-e2e: every request is the first buy of a
-- distinct user. Each wrk thread holds only its own share of the tokens (a
-- large Lua table in every thread puts garbage-collection pauses into the
-- measured tail).
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
  buy_path = path
  tokens = {}
  local i = 0
  for line in io.lines(file) do
    if i % nthreads == id then
      tokens[#tokens + 1] = "Bearer " .. line
    end
    i = i + 1
  end
  next_token = 1
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  -- Past the last token the users repeat (answered 409 limit_reached): the
  -- bench counts durable buys from each system's own stock, not from wrk.
  headers["Authorization"] = tokens[next_token]
  next_token = next_token % #tokens + 1
  return wrk.format("POST", buy_path, headers, '{"quantity":1}')
end
