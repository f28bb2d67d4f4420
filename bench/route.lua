-- wrk script: POST /v1/route with real prompts. Each line of $PROMPTS is a
-- JSON object with a "text" field and is sent as the body as it is (the
-- gateway ignores the other fields). Threads start at different lines.
local path = os.getenv("PROMPTS") or "prompts.jsonl"
local limit = tonumber(os.getenv("PROMPT_LIMIT") or "20000")
local lines = {}
local i = 0
local headers = { ["Content-Type"] = "application/json" }

local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

function init(args)
  for l in io.lines(path) do
    lines[#lines + 1] = l
    if #lines >= limit then break end
  end
  if #lines == 0 then error("no prompts in " .. path) end
  i = ((tid or 1) * 7919) % #lines
end

function request()
  i = i % #lines + 1
  return wrk.format("POST", "/v1/route", headers, lines[i])
end

dofile("bench/summary.lua")  -- done(): the wrk-summary line
