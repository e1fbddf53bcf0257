-- A wrk script that counts the answers of each status and keeps the first non-2xx one
-- (status, Cache-Status, body), printed after the round: a round's "errors" then say what
-- they were.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  first_error = ""
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status >= 300 and first_error == "" then
    local cache_status = headers["cache-status"] or headers["Cache-Status"] or "-"
    first_error = status .. " (Cache-Status: " .. cache_status .. ") " .. (body or "")
  end
end

function done(summary, latency, requests)
  local total, first = {}, ""
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
    local error = thread:get("first_error")
    if first == "" and error ~= "" then
      first = error
    end
  end
  for status, count in pairs(total) do
    io.write(string.format("status %d: %d\n", status, count))
  end
  if first ~= "" then
    io.write("first error: " .. first .. "\n")
  end
end
