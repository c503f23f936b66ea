"""The Lua scripts of `RedisState`: each decision is one script, run atomically by
Redis with its own clock (`TIME`), so replicas with skewed clocks agree.

Numbers come back as strings: Redis truncates Lua numbers to integers.
"""

from __future__ import annotations

from .resp import LATEST

__all__ = ["ADMIT", "REFUND", "RELEASE", "VIOLATION", "PROBE_CLEAN", "PROBE_UNUSED",
           "COUNTED", "UNLIMITED", "FIELDS", "bucket_field"]

UNLIMITED = -1  # a quota field that limits nothing
FIELDS = 8  # buckets in a quota's hash past which those caught up are dropped

def bucket_field(rate: float, burst: float) -> str:
    """The field of a quota's hash holding the bucket (`tat`) of `rate` per second with
    bursts of `burst`, as the scripts name it (`%.17g`: the same on every replica for
    the same number, whatever text its manifest gave it)."""
    return f"tat:{rate:.17g}:{burst:.17g}"

# A stored time or level, exactly: Lua's `tostring` keeps 14 digits, 100 µs of a time
# since the epoch, so a tenant's `tat` did not move by a 50 µs interval (every request
# at 20,000/s and up admitted) and moved by a rounded one below (found by review).
_EXACT = """
local function exact(x) return string.format('%.17g', x) end
"""

# A refusal's wait, at most the longest a reply may hold (`resp.number`): a CPU debt
# against a tiny budget (200 s at 1 µs a minute: 380 years) answered more, the reply
# was read as malformed, and `fail_open` admitted the tenant (found by review).
_WAIT = _EXACT + f"""
local function wait(x) return exact(math.min(x, {LATEST:.0f})) end
"""

# Keeps `key` for at least `seconds` (`extend`: never shortens what another field or
# lease needs). A bucket or CPU budget (`keep`) lives an hour at least: one that
# expired before it caught up was a fresh one (a rate of one a minute with a burst of
# 100, or below one an hour, was reset after an hour idle; one in 100,000 s with a
# burst of 100, 115.7 days ahead, after 30 days). At most the longest time the store
# holds, which EXPIRE takes whole.
_KEEP = f"""
local function extend(key, seconds)
  seconds = math.ceil(math.min(seconds, {LATEST:.0f}))
  if redis.call('TTL', key) < seconds then redis.call('EXPIRE', key, seconds) end
end
local function keep(key, seconds) extend(key, math.max(3600, seconds)) end
"""

# Each quota's bucket is a field of its own in its hash, named by the quota it enforces
# (`bucket_field`): one `tat` per tenant or function, whatever the manifest, let a
# rolling reload's faster replicas reset, at every request, the bucket a slower
# manifest's replicas filled (24,030 admitted in 2 s where the two manifests allowed
# 102 and 2,001, found by review). Past `FIELDS` buckets (the CPU budget's fields not
# counted), those caught up go: one caught up is as good as none. A bucket still ahead
# is never dropped, however many: dropping one gave its quota a full burst again (25
# admitted where 5 were allowed with nine manifests, found by review). They are at
# most as many as the manifests that admitted within their windows, and each goes
# once caught up (the key lives until the furthest is, see `keep`). The hash is read
# only as a bucket is made (HSET answers 1): read at every admission past the bound, a
# hash of 2,000 buckets ahead cost each 813 µs of the store's time, not 19 (found by
# review), and the caught-up ones wait for the next bucket made, never more of them.
_BUCKETS = f"""
local function bucket(rate, burst) return 'tat:' .. exact(rate) .. ':' .. exact(burst) end
local function store(key, name, tat, now)
  if redis.call('HSET', key, name, exact(tat)) == 0 then return end
  if redis.call('HLEN', key) <= {FIELDS} then return end
  local all = redis.call('HGETALL', key)
  local caught_up, count = {{}}, 0
  for i = 1, #all, 2 do
    local field = all[i]
    if field == 'tat' or string.sub(field, 1, 4) == 'tat:' then
      count = count + 1
      local at = tonumber(all[i + 1])
      if field ~= name and not (at and at > now) then caught_up[#caught_up + 1] = field end
    end
  end
  if count > {FIELDS} and #caught_up > 0 then redis.call('HDEL', key, unpack(caught_up)) end
end
"""

# Gives back `n` admissions of a grant that were not spent: KEYS[1] the tenant's quota,
# KEYS[2] the function's. Each rate's bucket (that of the quota that granted them)
# moves back as many intervals, never before now (the burst never grows beyond itself).
_REFUND = """
local function refund(n, frate, fburst, trate, tburst, now)
  if n <= 0 then return end
  for i, quota in ipairs({{trate, tburst}, {frate, fburst}}) do
    local rate = quota[1]
    if rate > 0 then
      local name = bucket(rate, quota[2])
      local tat = tonumber(redis.call('HGET', KEYS[i], name))
      if tat and tat > now then
        redis.call('HSET', KEYS[i], name, exact(math.max(now, tat - n / rate)))
      end
    end
  end
end
"""

# Gives back the leases of one tenant and charges their CPU: KEYS[tq] the tenant's
# quota, KEYS[tl] its leases, KEYS[first..] each release's function leases; from
# ARGV[arg], three per release: lease id, guest CPU seconds, tenant CPU seconds per minute.
_RELEASES = """
local function release(tq, tl, first, arg, now)
  for i = first, #KEYS do
    local a = arg + (i - first) * 3
    local id, used, cpu = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    redis.call('ZREM', KEYS[tl], id)
    redis.call('ZREM', KEYS[i], id)
    if used > 0 and cpu >= 0 then
      if not now then
        local t = redis.call('TIME')
        now = tonumber(t[1]) + tonumber(t[2]) / 1000000
      end
      local c = redis.call('HMGET', KEYS[tq], 'cpu', 'cpu_at')
      local level = tonumber(c[1]) or cpu
      level = math.min(cpu, level + math.max(0, now - (tonumber(c[2]) or now)) * cpu / 60)
      redis.call('HSET', KEYS[tq], 'cpu', exact(level - used), 'cpu_at', exact(now))
      redis.call('HINCRBYFLOAT', KEYS[tq], 'charged', used)
      keep(KEYS[tq], (cpu - (level - used)) * 60 / math.max(cpu, 1e-9) + 60)
    end
  end
end
"""

# KEYS: tenant quota, function quota, tenant leases, function leases, breaker, then the
#       function leases of each release of this tenant queued since the last call
# ARGV: lease id, lease seconds, function concurrency, rate, burst, tenant concurrency,
#       rate, burst, CPU seconds per minute, check breaker (0/1), probe timeout,
#       refusals counted locally since the last call, admissions wanted (see `credit`),
#       unspent admissions of this gate's last grant (refunded first, see REFUND), slots
#       wanted, requests waiting for this answer (the asking one included), then three
#       per release (see _RELEASES), given back first so that their slots and CPU count
#       for this request
# Grants n admissions (1 <= n <= wanted) and m concurrency slots (1 <= m <= n, slots
# wanted): one for each request waiting while the limits leave one, more only from the
# upper half of what is left of each rate's burst (n) and each concurrency limit (m),
# with the CPU budget above half, the breaker closed, and the slots granted fewer than
# those free (n no more than the requests waiting otherwise). The waiting requests the
# limits leave none for are refused in the same answer (`cut`): a grant halved below
# them sent them to ask again, three or four round trips in all. The slots are leases:
# the lease id, then the lease id followed by `.1`, ...
# Returns {'ok', probe taken (0/1), refusals while half open, now, n, m, then the
# refusal of the waiting requests beyond what was granted: kind ('none' when all have
# one, 'concurrency', 'rate', 'breaker'), scope ('-', 'function', 'tenant',
# 'half_open'), and a number (a rate's wait in seconds, the probe's time, else 1)}.
ADMIT = _WAIT + _KEEP + _BUCKETS + _REFUND + _RELEASES + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
release(1, 3, 6, 17, now)
refund(tonumber(ARGV[14]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[7]),
       tonumber(ARGV[8]), now)
local n = math.max(1, math.floor(tonumber(ARGV[13])))
local m = math.max(1, math.floor(tonumber(ARGV[15])))
local need = math.min(math.max(1, math.floor(tonumber(ARGV[16]))), n, m)
local cut = {'none', '-', '1'}
-- At most `count` of the waiting requests can be admitted, the others refused for `why`.
local function limit_to(count, kind, scope, number)
  if count < need then
    need = count
    cut = {kind, scope, number}
  end
end
local probe = false
if ARGV[10] == '1' then
  local pending = tonumber(ARGV[12])
  if pending > 0 and redis.call('EXISTS', KEYS[5]) == 1 then
    redis.call('HINCRBY', KEYS[5], 'denied', pending)
  end
  local b = redis.call('HMGET', KEYS[5], 'state', 'until', 'probe_at', 'count')
  if b[1] == 'open' then
    local till = tonumber(b[2]) or 0
    if now < till then
      redis.call('HINCRBY', KEYS[5], 'denied', 1)
      return {'breaker', 'open', tostring(till), tostring(b[4] or 0), tostring(now)}
    end
    probe = true
  elseif b[1] == 'half_open' then
    local at = tonumber(b[3]) or 0
    if now - at < tonumber(ARGV[11]) then
      redis.call('HINCRBY', KEYS[5], 'denied', 1)
      return {'breaker', 'half_open', tostring(at), tostring(b[4] or 0), tostring(now)}
    end
    probe = true
  end
  if b[1] and b[1] ~= 'closed' then
    n = 1  -- the probe alone
    limit_to(1, 'breaker', 'half_open', tostring(now))
  end
end
local at_limit = false  -- every free slot of a concurrency limit granted
local function busy(key, limit, scope)
  if limit < 0 then return false end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local free = limit - redis.call('ZCARD', key)
  if free <= 0 then return true end
  limit_to(free, 'concurrency', scope, '1')
  m = math.min(m, math.max(need, math.floor(free / 2)))
  if m >= free then at_limit = true end
  return false
end
local fconc, tconc = tonumber(ARGV[3]), tonumber(ARGV[6])
if busy(KEYS[4], fconc, 'function') then return {'concurrency', 'function', '1'} end
if busy(KEYS[3], tconc, 'tenant') then return {'concurrency', 'tenant', '1'} end
-- At a concurrency limit, one admission for each waiting request and no more: a credit
-- with admissions left kept each slot its runs gave back for them, taken in the store
-- with nothing running, until it settled (two holds: another replica refused a tenant
-- of one slot for ~104 ms, found by review). Spent at once, its slots go straight back.
if at_limit then n = need end
local cpu = tonumber(ARGV[9])
if cpu >= 0 then
  local c = redis.call('HMGET', KEYS[1], 'cpu', 'cpu_at')
  local level = tonumber(c[1])
  if level then
    local per = cpu / 60
    level = math.min(cpu, level + math.max(0, now - (tonumber(c[2]) or now)) * per)
    if level < 0 then return {'cpu', 'tenant', wait(-level / per)} end
    if level < cpu / 2 then n = need end  -- each would be admitted alone
  end
end
-- GCRA: the theoretical arrival time `tat` moves one interval per admitted request;
-- a request is early (refused) when it comes before tat - burst intervals. `left` is
-- what is left of the burst now (at most `burst`). The bucket is this quota's own
-- (`bucket`): never more than its window ahead, so an early request's wait is one
-- interval at most.
local function gcra(key, rate, burst, scope)
  if rate < 0 then return nil, 0 end
  local interval = 1 / rate
  local tat = tonumber(redis.call('HGET', key, bucket(rate, burst))) or now
  if tat < now then tat = now end
  -- Early by how far it is ahead beyond burst - 1 intervals: compared as differences,
  -- as the time `tat + interval - burst * interval` lost the microseconds of `now` to
  -- a window of 1e10 s and refused the first request of a fresh bucket.
  local early = (tat - now) - (burst - 1) * interval
  if early > 0 then return nil, early end
  local left = burst - (tat - now) / interval
  -- Once `whole` are taken, the next is early by (whole + 1 - left) intervals.
  local whole = math.floor(left)
  limit_to(whole, 'rate', scope, wait((whole + 1 - left) * interval))
  n = math.min(n, math.max(need, math.floor(left - burst / 2)))
  return tat, 0
end
local frate, fburst = tonumber(ARGV[4]), tonumber(ARGV[5])
local trate, tburst = tonumber(ARGV[7]), tonumber(ARGV[8])
local ftat, fwait = gcra(KEYS[2], frate, fburst, 'function')
if fwait > 0 then return {'rate', 'function', wait(fwait)} end
local ttat, twait = gcra(KEYS[1], trate, tburst, 'tenant')
if twait > 0 then return {'rate', 'tenant', wait(twait)} end
if ftat then
  local tat = ftat + n / frate
  store(KEYS[2], bucket(frate, fburst), tat, now)
  keep(KEYS[2], tat - now + 60)
end
if ttat then
  local tat = ttat + n / trate
  store(KEYS[1], bucket(trate, tburst), tat, now)
  keep(KEYS[1], tat - now + 60)
end
m = math.min(m, n)
local expiry = now + tonumber(ARGV[2])
if fconc >= 0 or tconc >= 0 then
  local members = {expiry, ARGV[1]}
  for i = 1, m - 1 do
    members[2 * i + 1] = expiry
    members[2 * i + 2] = ARGV[1] .. '.' .. i
  end
  for _, spec in ipairs({{KEYS[4], fconc}, {KEYS[3], tconc}}) do
    if spec[2] >= 0 then
      redis.call('ZADD', spec[1], unpack(members))
      -- Until its furthest lease expires, and a minute: a set shared by leases of
      -- several lengths (a tenant's functions, a reload to a shorter timeout) was
      -- given the expiry of the last one written, and a short one cut what a long
      -- run's lease relied on: the set expired under it, every replica forgot the
      -- slot, and a tenant ran more than its concurrency (found by review).
      local last = redis.call('ZRANGE', spec[1], -1, -1, 'WITHSCORES')
      extend(spec[1], tonumber(last[2]) - now + 60)
    end
  end
end
local denied = 0
if probe then
  denied = tonumber(redis.call('HGET', KEYS[5], 'denied')) or 0
  redis.call('HSET', KEYS[5], 'state', 'half_open', 'probe_at', tostring(now),
             'updated', tostring(now), 'denied', 0)
end
return {'ok', probe and '1' or '0', tostring(denied), tostring(now), tostring(n),
        tostring(m), cut[1], cut[2], cut[3]}
"""

# KEYS: tenant quota, function quota
# ARGV: admissions, function rate, burst, tenant rate, burst
REFUND = _EXACT + _BUCKETS + _REFUND + """
local t = redis.call('TIME')
refund(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
       tonumber(ARGV[5]), tonumber(t[1]) + tonumber(t[2]) / 1000000)
return 1
"""

# KEYS: tenant quota, tenant leases, then each release's function leases
# ARGV: three per release (see _RELEASES)
RELEASE = _EXACT + _KEEP + _RELEASES + """
release(1, 2, 3, 1, nil)
return 1
"""

# KEYS: breaker, violations
# ARGV: threshold, window, cooldown, the violation's member (unique, or its client's:
#       a client's next violation replaces it), breaker key, tenant, the
#       `probe_at` of the probe this run holds ("" when it holds none), how long a
#       violation is remembered (`BreakerConfig.remembered`). The probe's violation
#       re-opens a half-open breaker unless its member is still remembered.
VIOLATION = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[2])
local kept = tonumber(ARGV[8])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - kept)
local known = redis.call('ZSCORE', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[2], now, ARGV[4])
redis.call('EXPIRE', KEYS[2], math.ceil(kept) + 60)
local count = redis.call('ZCOUNT', KEYS[2], now - window, '+inf')
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  state = 'closed'
  redis.call('HSET', KEYS[1], 'state', 'closed', 'key', ARGV[5], 'tenant', ARGV[6],
             'trips', 0, 'denied', 0, 'updated', tostring(now))
end
-- The window it is counted in, for `stockade breaker list` (which has no manifest).
redis.call('HSET', KEYS[1], 'window', ARGV[2])
redis.call('EXPIRE', KEYS[1], 86400)
if state == 'open' or (state == 'closed' and count < tonumber(ARGV[1])) then
  return {'none', tostring(count)}
end
-- Half-open: only the run holding the probe (ARGV[7], its probe_at) re-opens it.
if state == 'half_open' and (ARGV[7] == '' or
                             redis.call('HGET', KEYS[1], 'probe_at') ~= ARGV[7]) then
  return {'none', tostring(count)}
end
-- A probe from a client still remembered (known) proves nothing: freed.
if state == 'half_open' and known then
  redis.call('HSET', KEYS[1], 'probe_at', '')
  return {'none', tostring(count)}
end
local denied = 0
if state == 'half_open' then
  denied = tonumber(redis.call('HGET', KEYS[1], 'denied')) or 0
end
local till = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', tostring(now), 'until', tostring(till),
           'probe_at', '', 'count', count, 'denied', 0, 'updated', tostring(now))
redis.call('HINCRBY', KEYS[1], 'trips', 1)
return {'open', state, tostring(count), tostring(till), tostring(denied), tostring(now)}
"""

# The probe granted at ARGV[1] (its `probe_at`) ran clean: closed, when that probe is
# still the one out (not given up after `probe_timeout` and granted to another).
# KEYS: breaker, violations
PROBE_CLEAN = """
local b = redis.call('HMGET', KEYS[1], 'state', 'probe_at')
if b[1] ~= 'half_open' or b[2] ~= ARGV[1] then return {'none'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local denied = tonumber(redis.call('HGET', KEYS[1], 'denied')) or 0
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'state', 'closed', 'until', '', 'probe_at', '', 'count', 0,
           'denied', 0, 'updated', tostring(now))
return {'closed', tostring(denied), tostring(now)}
"""

# A probe granted but never run (refused before it started, cancelled): freed, so the
# next admission may probe; only when the probe is still the one granted at ARGV[1]
# (its `probe_at`), never one granted to another request since.
# KEYS: breaker
PROBE_UNUSED = """
local b = redis.call('HMGET', KEYS[1], 'state', 'probe_at')
if b[1] ~= 'half_open' or b[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'probe_at', '')
return 1
"""

# Whether the violation member ARGV[1] is counted within the last ARGV[2] seconds, by
# Redis's clock (the one that scored it). KEYS: violations
COUNTED = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if now - tonumber(score) <= tonumber(ARGV[2]) then return 1 end
return 0
"""
