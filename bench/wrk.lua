-- wrk script of bench/run.sh: every request is the raw HTTP/1.1 request in
-- the file named by $BENCH_REQ (made by mkreq.pl, or the captured signed
-- request of the floor), sent as it is.

local f = assert(io.open(os.getenv("BENCH_REQ"), "rb"))
local raw = f:read("*a")
f:close()

request = function()
    return raw
end
