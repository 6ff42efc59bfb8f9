-- wrk script: PUT /api/v1/orders/{external_id} with a fresh external_id per request.
--
--   RCP_API_KEY=rcp_... wrk -t2 -c64 -d10s --latency -s scripts/wrk/put-orders.lua \
--       http://127.0.0.1:PORT/api/v1/orders
--
-- The URL's path is the prefix of every order URL. Environment:
--   RCP_API_KEY            API key with write scope (required)
--   RCP_RUN_ID             prefix that keeps ids unique across runs on one database
--                          (default: the time and a random number)
--   RCP_UNIQUE_CUSTOMERS=1 a new customer e-mail per order (default: every order
--                          is by a@example.com, the body of the API docs)
--   RCP_ORDER_STATUS       the order status sent (default "placed")
--   RCP_LINKED_ORDERS=1    every order sends the buyer's IP address and user
--                          agent (a link, so it gets a referral attribution job;
--                          default: no link, no job)
--
-- external_id = <run>-<wrk thread number>-<per-thread counter>, so no two
-- requests of one run share an id and every PUT is a create (201). At the end
-- the script prints how many responses had which status ("put-orders: ..."),
-- so a run that got 200s (ids reused) or 4xx (bad key, bad body) shows.

local api_key = os.getenv("RCP_API_KEY")
if api_key == nil or api_key == "" then
   io.stderr:write("put-orders.lua: set RCP_API_KEY to an API key with write scope\n")
   os.exit(2)
end

local run_id = os.getenv("RCP_RUN_ID")
if run_id == nil or run_id == "" then
   math.randomseed(os.time())
   run_id = string.format("w%d-%d", os.time(), math.random(1, 1000000))
end
local unique_customers = os.getenv("RCP_UNIQUE_CUSTOMERS") == "1"
local order_status = os.getenv("RCP_ORDER_STATUS") or "placed"
local linked = os.getenv("RCP_LINKED_ORDERS") == "1"

local body_head = '{"customer":{"email":"'
local body_tail = '","first_name":"Anna","last_name":"Muster","locale":"de"},"currency":"EUR",'
   .. '"items":[{"sku":"SKU-1","name":"Tee","quantity":2,"unit_price":"9.90"}],'
   .. '"totals":{"total":"19.80"},"status":"' .. order_status .. '"'
   .. (linked and ',"client_ip":"203.0.113.7","client_user_agent":"Mozilla/5.0 (X11; Linux x86_64)"' or '')
   .. '}'
local fixed_body = body_head .. "a@example.com" .. body_tail

-- ---------------------------------------------------------------- main state

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_no", #threads)
end

-- ---------------------------------------------------------------- per thread

thread_no = 0          -- set by setup() before init() runs
local counter = 0
local prefix

-- response counts, read by done() through thread:get
n_201, n_200, n_4xx, n_5xx, n_other = 0, 0, 0, 0, 0
first_error = ""

function init(args)
   prefix = string.gsub(wrk.path, "/+$", "") .. "/" .. run_id .. "-" .. thread_no .. "-"
   wrk.method = "PUT"
   wrk.headers["Authorization"] = "Bearer " .. api_key
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Accept"] = "application/json"
   wrk.body = fixed_body
end

function request()
   counter = counter + 1
   local path = prefix .. counter
   if unique_customers then
      local email = "c-" .. run_id .. "-" .. thread_no .. "-" .. counter .. "@example.com"
      return wrk.format(nil, path, nil, body_head .. email .. body_tail)
   end
   return wrk.format(nil, path)
end

function response(status, headers, body)
   if status == 201 then
      n_201 = n_201 + 1
   elseif status == 200 then
      n_200 = n_200 + 1
   else
      if status >= 500 then n_5xx = n_5xx + 1
      elseif status >= 400 then n_4xx = n_4xx + 1
      else n_other = n_other + 1 end
      if first_error == "" then
         first_error = status .. " " .. string.sub(body or "", 1, 300)
      end
   end
end

-- ---------------------------------------------------------------- main state

function done(summary, latency, requests)
   local c201, c200, c4, c5, co, err = 0, 0, 0, 0, 0, ""
   for _, t in ipairs(threads) do
      c201 = c201 + (t:get("n_201") or 0)
      c200 = c200 + (t:get("n_200") or 0)
      c4 = c4 + (t:get("n_4xx") or 0)
      c5 = c5 + (t:get("n_5xx") or 0)
      co = co + (t:get("n_other") or 0)
      local e = t:get("first_error")
      if err == "" and e ~= nil and e ~= "" then err = e end
   end
   io.write(string.format("put-orders: 201=%d 200=%d 4xx=%d 5xx=%d other=%d\n", c201, c200, c4, c5, co))
   if err ~= "" then
      io.write("put-orders: first error: " .. err .. "\n")
   end
end
