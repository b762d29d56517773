//! The Lua scripts that make leasing and settling atomic.
//!
//! Every script gets the same key layout: `KEYS[1..L]` are the priority streams from the highest
//! priority down to 0 (`L = max_priority + 1`, so priority `p` is `KEYS[maxp - p + 1]`), then the
//! due sorted set, the delayed stream, the dead-letter stream and the counters hash. `ARGV[1..4]`
//! are the group, this handle's consumer name, `max_deliveries` and `max_priority`.
//!
//! Entry fields: `d` the payload, `h:<name>` one header each, `id` the message id when it differs
//! from the entry id (the entry was re-added by a nack or moved from the delayed stream), `dc`
//! the deliveries before this entry (carried across re-adds so the count keeps increasing).
//! Delayed entries also carry `p` (their priority). Dead letters carry `id`, `p`, `n` (delivery
//! count), `why` (`max` or `term`), `reason` (the limit or the text) and `at` (ms since the epoch).
//!
//! Time is the server's (`TIME`), so every client agrees on due times. Scripts run with effects
//! replication (Redis ≥ 5 default), so `TIME` and `XAUTOCLAIM` are allowed.

use std::sync::LazyLock;

use redis::Script;

/// Helpers shared by every script (prepended to each).
const PRELUDE: &str = r#"
local group, consumer = ARGV[1], ARGV[2]
local maxd, maxp = tonumber(ARGV[3]), tonumber(ARGV[4])
local L = maxp + 1
local due, delayed, dlq, counters = KEYS[L + 1], KEYS[L + 2], KEYS[L + 3], KEYS[L + 4]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function stream_of(p)
  if p > maxp then p = maxp end
  if p < 0 then p = 0 end
  return KEYS[maxp - p + 1]
end
local function field(f, name)
  for i = 1, #f, 2 do
    if f[i] == name then return f[i + 1] end
  end
  return nil
end
-- The message's own fields (payload, headers) without the bookkeeping ones.
local function own_fields(f)
  local out = {}
  for i = 1, #f, 2 do
    local k = f[i]
    if k == 'd' or string.sub(k, 1, 2) == 'h:' then
      out[#out + 1] = k
      out[#out + 1] = f[i + 1]
    end
  end
  return out
end
local function dead_letter(key, eid, f, p, count, why, reason, now)
  local out = own_fields(f)
  redis.call('XADD', dlq, '*', 'id', field(f, 'id') or eid, 'p', p, 'n', count, 'why', why,
    'reason', reason, 'at', now, unpack(out))
  redis.call('XACK', key, group, eid)
  redis.call('XDEL', key, eid)
  redis.call('HINCRBY', counters, 'completed', 1)
end
-- Gives a delivery back: re-added (at once or after `delay` ms) with the delivery count carried,
-- or dead-lettered once it has had `maxd` deliveries.
local function give_back(key, eid, f, p, count, delay, now)
  if count >= maxd then
    dead_letter(key, eid, f, p, count, 'max', maxd, now)
    return
  end
  local out = own_fields(f)
  out[#out + 1] = 'id'
  out[#out + 1] = field(f, 'id') or eid
  out[#out + 1] = 'dc'
  out[#out + 1] = count
  if delay > 0 then
    local did = redis.call('XADD', delayed, '*', 'p', p, unpack(out))
    redis.call('ZADD', due, now + delay, did)
  else
    redis.call('XADD', key, '*', unpack(out))
  end
  redis.call('XACK', key, group, eid)
  redis.call('XDEL', key, eid)
end
local function pending_of(key, eid)
  local pe = redis.call('XPENDING', key, group, eid, eid, 1)
  return pe[1]
end
"#;

/// `maintain`, run in the same pipeline just before each non-blocking `XREADGROUP` of a lease:
/// moves due delayed messages into their streams (so that read sees them) and, when asked,
/// claims expired leases (`XAUTOCLAIM`, highest priority first), dead-lettering those past
/// `max_deliveries`. New entries are read by the plain `XREADGROUP`, not here, so payloads never
/// pass through Lua on the hot path.
///
/// Extra ARGV: 5 the most to claim, 6 claim (`1`/`0`), 7 visibility timeout in ms.
/// Returns `{claimed, next_due_ms}`: each claimed delivery is `{priority, entry_id,
/// times_delivered, fields}`; `next_due_ms` is how long until the next delayed message is due
/// (`-1`: none).
const MAINTAIN_BODY: &str = r#"
local want = tonumber(ARGV[5])
local claim = ARGV[6] == '1'
local vt = tonumber(ARGV[7])
local now = now_ms()
local ready = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, 512)
for _, did in ipairs(ready) do
  local e = redis.call('XRANGE', delayed, did, did)[1]
  if e then
    local f = e[2]
    local out = own_fields(f)
    out[#out + 1] = 'id'
    out[#out + 1] = field(f, 'id') or did
    local dc = field(f, 'dc')
    if dc then
      out[#out + 1] = 'dc'
      out[#out + 1] = dc
    end
    redis.call('XADD', stream_of(tonumber(field(f, 'p') or '0')), '*', unpack(out))
    redis.call('XDEL', delayed, did)
  end
  redis.call('ZREM', due, did)
end
local res = {}
if claim then
  for i = 1, L do
    if #res >= want then break end
    local key = KEYS[i]
    local p = maxp - i + 1
    local c = redis.call('XAUTOCLAIM', key, group, consumer, vt, '0-0', 'COUNT', want - #res)
    for _, e in ipairs(c[2]) do
      if e and e[2] then
        local eid, f = e[1], e[2]
        local pe = pending_of(key, eid)
        local times = pe and tonumber(pe[4]) or 1
        local count = tonumber(field(f, 'dc') or '0') + times
        if count > maxd then
          dead_letter(key, eid, f, p, count - 1, 'max', maxd, now)
        else
          res[#res + 1] = {p, eid, times, f}
        end
      end
    end
  end
end
local next_due = -1
local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
if first[2] then
  next_due = math.max(0, tonumber(first[2]) - now)
end
return {res, next_due}
"#;

/// `nack` / `term` / `in_progress` for one or more leases, each checked atomically: the entry
/// must still be pending for this consumer with the delivery count the lease was issued with
/// (`XACK` alone would accept a lease another consumer has claimed since).
///
/// Extra ARGV from 5: groups of five, `op` (`nack`, `term`, `touch`), priority, entry id, times
/// delivered, extra (nack: delay in ms; term: reason). Returns one integer per lease: `1` done,
/// `0` stale.
const SETTLE_BODY: &str = r#"
local res = {}
local now = nil
for j = 5, #ARGV, 5 do
  local op, p, eid, times, extra = ARGV[j], tonumber(ARGV[j + 1]), ARGV[j + 2],
    tonumber(ARGV[j + 3]), ARGV[j + 4]
  local key = stream_of(p)
  local pe = pending_of(key, eid)
  if pe and pe[2] == consumer and tonumber(pe[4]) == times then
    if op == 'touch' then
      redis.call('XCLAIM', key, group, consumer, 0, eid, 'JUSTID')
    else
      now = now or now_ms()
      local e = redis.call('XRANGE', key, eid, eid)[1]
      local f = e and e[2] or {}
      local count = tonumber(field(f, 'dc') or '0') + times
      if op == 'term' then
        dead_letter(key, eid, f, p, count, 'term', extra, now)
      else
        give_back(key, eid, f, p, count, tonumber(extra), now)
      end
    end
    res[#res + 1] = 1
  else
    res[#res + 1] = 0
  end
end
return res
"#;

/// `ack` for a batch of leases, checked like `settle` but in bulk per stream: one `XPENDING`
/// over the group's id range filtered to this consumer (a per-id `XPENDING` only for ids the
/// range reply may have cut off), then one `XACK` and one `XDEL` per 1000 ids.
///
/// Extra ARGV from 5, per stream: priority, lowest id, highest id, n, then n pairs of entry id
/// and times delivered. Returns one integer per pair in order: `1` acked, `0` stale.
const ACK_BODY: &str = r#"
local res = {}
local acked = 0
local j = 5
while j <= #ARGV do
  local p, lo, hi, n = tonumber(ARGV[j]), ARGV[j + 1], ARGV[j + 2], tonumber(ARGV[j + 3])
  local key = stream_of(p)
  local first = j + 4
  j = first + 2 * n
  local limit = n * 2
  local pend = redis.call('XPENDING', key, group, lo, hi, limit, consumer)
  local cut = #pend >= limit
  local mine = {}
  for _, pe in ipairs(pend) do mine[pe[1]] = tonumber(pe[4]) end
  local ok = {}
  for k = first, j - 1, 2 do
    local eid, times = ARGV[k], tonumber(ARGV[k + 1])
    local t = mine[eid]
    if t == nil and cut then
      local pe = pending_of(key, eid)
      if pe and pe[2] == consumer then t = tonumber(pe[4]) end
    end
    if t ~= nil and t == times then
      mine[eid] = -1
      ok[#ok + 1] = eid
      res[#res + 1] = 1
    else
      if t == nil and cut then mine[eid] = -1 end
      res[#res + 1] = 0
    end
  end
  for c = 1, #ok, 1000 do
    local last = math.min(c + 999, #ok)
    redis.call('XACK', key, group, unpack(ok, c, last))
    redis.call('XDEL', key, unpack(ok, c, last))
  end
  acked = acked + #ok
end
if acked > 0 then
  redis.call('HINCRBY', counters, 'completed', acked)
end
return res
"#;

/// `close`: gives back every entry pending for this consumer (as a zero-delay nack, so the
/// delivery count keeps increasing), then removes the consumer from each group.
/// Returns how many entries were given back.
const CLOSE_BODY: &str = r#"
local now = now_ms()
local n = 0
for i = 1, L do
  local key = KEYS[i]
  local p = maxp - i + 1
  if redis.call('EXISTS', key) == 1 then
    while true do
      local pend = redis.call('XPENDING', key, group, '-', '+', 500, consumer)
      if #pend == 0 then break end
      for _, pe in ipairs(pend) do
        local eid = pe[1]
        local e = redis.call('XRANGE', key, eid, eid)[1]
        if e then
          local count = tonumber(field(e[2], 'dc') or '0') + tonumber(pe[4])
          give_back(key, eid, e[2], p, count, 0, now)
        else
          redis.call('XACK', key, group, eid)
        end
        n = n + 1
      end
    end
    pcall(redis.call, 'XGROUP', 'DELCONSUMER', key, group, consumer)
  end
end
return n
"#;

/// Publishes one message with a delay and/or a dedup id.
///
/// KEYS: target stream, delayed stream, due set, counters hash, dedup key (unused without a dedup
/// id). ARGV: delay ms, dedup window ms (`0`: no dedup), priority, then field/value pairs.
/// Returns `{1, id}` when published, `{0, id}` for a duplicate (the first message's id).
const PUBLISH_SRC: &str = r#"
local delay, window, p = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
if window > 0 then
  local seen = redis.call('GET', KEYS[5])
  if seen then return {0, seen} end
end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local id
if delay > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  id = redis.call('XADD', KEYS[2], '*', 'p', p, unpack(fields))
  redis.call('ZADD', KEYS[3], now + delay, id)
else
  id = redis.call('XADD', KEYS[1], '*', unpack(fields))
end
if window > 0 then
  redis.call('SET', KEYS[5], id, 'PX', window)
end
redis.call('HINCRBY', KEYS[4], 'published', 1)
return {1, id}
"#;

/// Statistics in one consistent read.
///
/// Extra ARGV: none beyond the common four. Returns `{backlog, delayed, in_flight, dead,
/// oldest_ready_age_ms (-1: none), published, completed}`.
const STATS_BODY: &str = r#"
local now = now_ms()
local backlog, inflight, oldest = 0, 0, -1
for i = 1, L do
  local key = KEYS[i]
  if redis.call('EXISTS', key) == 1 then
    local len = redis.call('XLEN', key)
    local pending, last = 0, '0-0'
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      if field(g, 'name') == group then
        pending = tonumber(field(g, 'pending'))
        last = field(g, 'last-delivered-id')
      end
    end
    inflight = inflight + pending
    local ready = len - pending
    if ready > 0 then
      backlog = backlog + ready
      local first = redis.call('XRANGE', key, '(' .. last, '+', 'COUNT', 1)[1]
      if first then
        local ms = tonumber(string.match(first[1], '^(%d+)'))
        local age = math.max(0, now - ms)
        if age > oldest then oldest = age end
      end
    end
  end
end
local ready_delayed = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
local due_now = redis.call('ZCOUNT', due, '-inf', now)
if ready_delayed[2] then
  backlog = backlog + due_now
  local age = math.max(0, now - tonumber(ready_delayed[2]))
  if age > oldest then oldest = age end
end
local waiting = redis.call('ZCARD', due) - due_now
local dead = redis.call('XLEN', dlq)
local c = redis.call('HMGET', counters, 'published', 'completed')
return {backlog, waiting, inflight, dead, oldest, tonumber(c[1] or '0'), tonumber(c[2] or '0')}
"#;

/// Moves dead letters back to their priority streams with a fresh delivery count.
///
/// KEYS: the common layout. Extra ARGV: 5 the message id to replay (empty: any), 6 the most to
/// move. Returns `{moved, new_id_of_the_last}`.
const REPLAY_BODY: &str = r#"
local target, limit = ARGV[5], tonumber(ARGV[6])
local start = '-'
local moved, last = 0, ''
while moved < limit do
  local batch = redis.call('XRANGE', dlq, start, '+', 'COUNT', 200)
  if #batch == 0 then break end
  for _, e in ipairs(batch) do
    local f = e[2]
    if target == '' or field(f, 'id') == target then
      local out = own_fields(f)
      last = redis.call('XADD', stream_of(tonumber(field(f, 'p') or '0')), '*', unpack(out))
      redis.call('XDEL', dlq, e[1])
      redis.call('HINCRBY', counters, 'published', 1)
      moved = moved + 1
      if moved >= limit then break end
    end
    start = '(' .. e[1]
  end
end
return {moved, last}
"#;

/// Deletes every dead letter. Returns how many.
const PURGE_BODY: &str = r#"
local n = redis.call('XLEN', dlq)
redis.call('DEL', dlq)
return n
"#;

/// The scripts, compiled once per process (the client sends `EVALSHA` and loads a script only
/// when the server answers `NOSCRIPT`, e.g. after a restart).
pub(crate) struct Scripts {
    pub(crate) maintain: Script,
    pub(crate) settle: Script,
    pub(crate) ack: Script,
    pub(crate) close: Script,
    pub(crate) publish: Script,
    pub(crate) stats: Script,
    pub(crate) replay: Script,
    pub(crate) purge: Script,
}

impl Scripts {
    /// Every script, for loading them all on connect.
    pub(crate) fn all(&self) -> [&Script; 8] {
        [
            &self.ack,
            &self.maintain,
            &self.settle,
            &self.close,
            &self.publish,
            &self.stats,
            &self.replay,
            &self.purge,
        ]
    }
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
    Scripts {
        maintain: with_prelude(MAINTAIN_BODY),
        settle: with_prelude(SETTLE_BODY),
        ack: with_prelude(ACK_BODY),
        close: with_prelude(CLOSE_BODY),
        publish: Script::new(PUBLISH_SRC),
        stats: with_prelude(STATS_BODY),
        replay: with_prelude(REPLAY_BODY),
        purge: with_prelude(PURGE_BODY),
    }
});
