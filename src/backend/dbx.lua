#!lua name=dbx
-- DBX's methods executed inside Redis (Redis Functions, Redis 7.0+), atomically, with
-- DBX's bookkeeping: the global revision, the epoch, the change stream and the TTL
-- deadlines. The layout and the contract with the gateway are in docs/BACKEND.md; the
-- reference for every result, error and rev is the embedded store (src/cmd/*.rs).
--
-- Why a hand-written JSON reader: cjson turns every number into a double (integers past
-- 2^53 change, `1.50` stored as a value becomes `1.5`) and decodes `[]` and `{}` to the
-- same empty table; DBX needs numbers as the text the client sent and the two empties
-- told apart. Output is built by hand too, so integers never print as `1e+15`.

-- The version the gateway compares with the one it embeds (keep it on this line: the
-- gateway may read it from the file text).
local LIB_VERSION = '4'

-- Redis 7.0 runs a library's top level with nothing but `redis` in scope (no string,
-- table, math …): everything is built on the first call, inside `build`.
local function build()
  local K_REV = '__dbx:rev'
  local K_EPOCH = '__dbx:epoch'
  local K_CHANGES = '__dbx:changes'
  local K_DEADLINES = '__dbx:deadlines'
  local K_LIB = '__dbx:lib'
  local K_BIG = '__dbx:deadlines:exact'
  local PREFIX = '__dbx:'
  local RESERVED = { K_REV, K_EPOCH, K_CHANGES, K_DEADLINES, K_LIB, K_BIG }
  local IS_RESERVED = {}
  for _, k in ipairs(RESERVED) do
    IS_RESERVED[k] = true
  end

  local find, sub, byte, char, gsub, fmt = string.find, string.sub, string.byte, string.char, string.gsub, string.format
  local concat, floor, ceil = table.concat, math.floor, math.ceil
  local rcall, rpcall = redis.call, redis.pcall

  -- Deadlines (unix ms) are Lua numbers below 2^53, where doubles are exact; later ones
  -- (TTLs of ~285,000 years and more) are decimal text, kept exactly in K_BIG.
  local MAX_EXACT = 9007199254740992
  local U64_MAX = '18446744073709551615'
  -- The latest native PEXPIREAT set (Redis takes at most LLONG_MAX): a key with a later
  -- deadline is as good as never expiring natively.
  local NATIVE_MAX = '4611686018427387904'

  ---------------------------------------------------------------------------------------
  -- Errors: thrown as tables, caught per operation.

  local function throw(code, message)
    error({ dbx = true, code = code, message = message }, 0)
  end

  local function invalid(message)
    throw('invalid_params', message)
  end

  local function wrong_type()
    throw('wrong_type', 'Operation against a key holding the wrong kind of value')
  end

  local function key_not_found(key)
    throw('not_found', "Key '" .. key .. "' not found")
  end

  ---------------------------------------------------------------------------------------
  -- JSON reading. Values: Lua string; NUM {num = "text"}; true/false; NULL; objects
  -- {obj = true, names = {...in order}, map = {name = value}, dup = first repeated name};
  -- arrays {arr = true, list = {...}}; a string holding a lone surrogate escape
  -- {badstr = true} (the embedded store refuses it as "not a string").

  local NULL = {}

  local function json_fail(what)
    throw('invalid_request', 'Invalid JSON: ' .. what)
  end

  local simple_escapes = { ['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t' }

  local function utf8_char(cp)
    if cp < 0x80 then
      return char(cp)
    elseif cp < 0x800 then
      return char(0xC0 + floor(cp / 64), 0x80 + cp % 64)
    elseif cp < 0x10000 then
      return char(0xE0 + floor(cp / 4096), 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
    end
    return char(0xF0 + floor(cp / 262144), 0x80 + floor(cp / 4096) % 64, 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
  end

  local function read_string(s, i)
    -- s at i is the opening quote
    local j = i + 1
    local q = find(s, '["\\]', j)
    if not q then
      json_fail('unterminated string')
    end
    if byte(s, q) == 34 then
      return sub(s, j, q - 1), q + 1
    end
    local parts, bad = {}, false
    while true do
      q = find(s, '["\\]', j)
      if not q then
        json_fail('unterminated string')
      end
      parts[#parts + 1] = sub(s, j, q - 1)
      if byte(s, q) == 34 then
        break
      end
      local c = sub(s, q + 1, q + 1)
      if c == 'u' then
        local hex = sub(s, q + 2, q + 5)
        if not find(hex, '^%x%x%x%x$') then
          json_fail('bad \\u escape')
        end
        local cp = tonumber(hex, 16)
        j = q + 6
        if cp >= 0xD800 and cp <= 0xDBFF then
          if find(s, '^\\u[dD][c-fC-F]%x%x', j) then
            cp = 0x10000 + (cp - 0xD800) * 1024 + (tonumber(sub(s, j + 2, j + 5), 16) - 0xDC00)
            j = j + 6
          else
            bad = true
            cp = 0xFFFD
          end
        elseif cp >= 0xDC00 and cp <= 0xDFFF then
          bad = true
          cp = 0xFFFD
        end
        parts[#parts + 1] = utf8_char(cp)
      else
        local e = simple_escapes[c]
        if not e then
          json_fail('bad escape')
        end
        parts[#parts + 1] = e
        j = q + 2
      end
    end
    if bad then
      return { badstr = true }, q + 1
    end
    return concat(parts), q + 1
  end

  local read_value

  local function skip(s, i)
    local _, e = find(s, '^[ \t\r\n]*', i)
    return e + 1
  end

  read_value = function(s, i, depth)
    i = skip(s, i)
    local c = byte(s, i)
    if c == 34 then
      return read_string(s, i)
    elseif c == 123 then
      if depth > 128 then
        json_fail('nested too deeply')
      end
      local o = { obj = true, names = {}, map = {} }
      i = skip(s, i + 1)
      if byte(s, i) == 125 then
        return o, i + 1
      end
      while true do
        i = skip(s, i)
        if byte(s, i) ~= 34 then
          json_fail('expected a field name')
        end
        local k
        k, i = read_string(s, i)
        if type(k) ~= 'string' then
          json_fail('field name is not a valid string (lone surrogate escape)')
        end
        i = skip(s, i)
        if byte(s, i) ~= 58 then
          json_fail("expected ':'")
        end
        local v
        v, i = read_value(s, i + 1, depth + 1)
        if o.map[k] ~= nil then
          o.dup = o.dup or k
        else
          o.names[#o.names + 1] = k
        end
        o.map[k] = v
        i = skip(s, i)
        local d = byte(s, i)
        if d == 125 then
          return o, i + 1
        elseif d ~= 44 then
          json_fail("expected ',' or '}'")
        end
        i = i + 1
      end
    elseif c == 91 then
      if depth > 128 then
        json_fail('nested too deeply')
      end
      local a = { arr = true, list = {} }
      local list = a.list
      i = skip(s, i + 1)
      if byte(s, i) == 93 then
        return a, i + 1
      end
      while true do
        local v
        v, i = read_value(s, i, depth + 1)
        list[#list + 1] = v
        i = skip(s, i)
        local d = byte(s, i)
        if d == 93 then
          return a, i + 1
        elseif d ~= 44 then
          json_fail("expected ',' or ']'")
        end
        i = i + 1
      end
    elseif c == 116 and sub(s, i, i + 3) == 'true' then
      return true, i + 4
    elseif c == 102 and sub(s, i, i + 4) == 'false' then
      return false, i + 5
    elseif c == 110 and sub(s, i, i + 3) == 'null' then
      return NULL, i + 4
    else
      local a, b = find(s, '^-?%d+%.?%d*[eE]?[-+]?%d*', i)
      if not a then
        json_fail('unexpected character at offset ' .. (i - 1))
      end
      return { num = sub(s, a, b) }, b + 1
    end
  end

  local function json_decode(s)
    local v, i = read_value(s, 1, 0)
    if skip(s, i) <= #s then
      json_fail('trailing characters')
    end
    return v
  end

  -- cjson's output in the representation above, when nothing was lost: no number (cjson
  -- makes doubles of them), no empty table (`[]` or `{}`?), no object below an op's
  -- params (their field order matters: mset, hash.set). Returns nil otherwise.
  local cjson_null = cjson.null
  local from_cjson
  -- Objects from cjson are only ops and their params, whose field order is never read.
  local NO_NAMES = {}

  -- Object fields converted in place (the table cjson made becomes the map).
  local function cjson_object(v, depth)
    if depth > 2 then
      return nil
    end
    for k, x in pairs(v) do
      if type(k) ~= 'string' then
        return nil
      end
      if type(x) ~= 'string' then
        x = from_cjson(x, depth + 1)
        if x == nil then
          return nil
        end
        v[k] = x
      end
    end
    return { obj = true, names = NO_NAMES, map = v }
  end

  from_cjson = function(v, depth)
    local t = type(v)
    if t == 'string' or t == 'boolean' then
      return v
    elseif t == 'table' then
      if v[1] == nil then
        if next(v) == nil then
          return nil
        end
        return cjson_object(v, depth)
      end
      for i = 1, #v do
        local x = v[i]
        if type(x) ~= 'string' then
          x = from_cjson(x, depth + 1)
          if x == nil then
            return nil
          end
          v[i] = x
        end
      end
      return { arr = true, list = v }
    elseif v == cjson_null then
      return NULL
    end
    return nil -- a number
  end

  -- An ops array (`array`) or one op object: cjson (C, ~8x faster) when it loses
  -- nothing, else the reader above. A surrogate escape goes to the reader (cjson lets a
  -- lone one through).
  local function decode_json(s, array)
    if not find(s, '\\u', 1, true) or not find(s, '\\u[dD][89a-fA-F]') then
      local ok, v = pcall(cjson.decode, s)
      if ok and type(v) == 'table' and (v[1] ~= nil) == array then
        -- depth as if inside an array, so that params' objects go to the reader
        local r = from_cjson(v, array and 0 or 1)
        if r then
          return r
        end
      end
    end
    return json_decode(s)
  end

  ---------------------------------------------------------------------------------------
  -- JSON writing.

  local escapes = {}
  for b = 0, 31 do
    escapes[char(b)] = fmt('\\u%04x', b)
  end
  escapes['\b'], escapes['\f'], escapes['\n'], escapes['\r'], escapes['\t'] = '\\b', '\\f', '\\n', '\\r', '\\t'
  escapes['"'], escapes['\\'] = '\\"', '\\\\'

  -- Bytes that are not UTF-8 (only in values written into Redis by something else than
  -- DBX) become U+FFFD, so the reply stays valid JSON text.
  local function fix_utf8(s)
    local i, last, out = 1, 1, nil
    while true do
      local p = find(s, '[\128-\255]', i)
      if not p then
        break
      end
      local c = byte(s, p)
      local len = (c >= 0xC2 and c <= 0xDF and 2) or (c >= 0xE0 and c <= 0xEF and 3) or (c >= 0xF0 and c <= 0xF4 and 4) or 0
      local ok = len > 0
      if ok then
        for k = 1, len - 1 do
          local cc = byte(s, p + k)
          if not cc or cc < 0x80 or cc > 0xBF then
            ok = false
            break
          end
        end
      end
      if ok then
        local c2 = byte(s, p + 1)
        if (c == 0xE0 and c2 < 0xA0) or (c == 0xED and c2 > 0x9F) or (c == 0xF0 and c2 < 0x90) or (c == 0xF4 and c2 > 0x8F) then
          ok = false
        end
      end
      if ok then
        i = p + len
      else
        out = out or {}
        out[#out + 1] = sub(s, last, p - 1)
        out[#out + 1] = '\239\191\189'
        last = p + 1
        i = p + 1
      end
    end
    if not out then
      return s
    end
    out[#out + 1] = sub(s, last)
    return concat(out)
  end

  local function jstr(s)
    if not find(s, '[%z\1-\31"\\\128-\255]') then
      return '"' .. s .. '"'
    end
    s = gsub(s, '[%z\1-\31"\\]', escapes)
    if find(s, '[\128-\255]') then
      s = fix_utf8(s)
    end
    return '"' .. s .. '"'
  end

  -- An integer-valued double as decimal text (never an exponent). '%d' (a C long) is
  -- exact below 2^53 and costs a third of '%.0f' (glibc's float printing).
  local function int(n)
    if n < MAX_EXACT and n > -MAX_EXACT then
      return fmt('%d', n)
    end
    return fmt('%.0f', n)
  end

  local function jbool(b)
    return b and 'true' or 'false'
  end

  -- A score as the embedded store prints it (proto::write_f64): whole numbers below 1e15
  -- as integers, ±inf as "+inf"/"-inf", everything else as the shortest text that reads
  -- back as the same double, laid out as serde_json 1.0.15x (zmij) does: plain decimals
  -- for exponents -5..=15 (`0.00001`, `1000000000000000.0`), else `1e+16`, `1.5e-7`.
  local function score_text(v)
    if v ~= v then
      return '"NaN"'
    elseif v == math.huge then
      return '"+inf"'
    elseif v == -math.huge then
      return '"-inf"'
    end
    if v == 0 then
      return '0'
    end
    if v == floor(v) and math.abs(v) < 1e15 then
      return fmt('%.0f', v)
    end
    -- The shortest digits: for a normal double, rounding to 15 digits gives them
    -- (zero-padded) whenever 15 or fewer suffice, and the correctly rounded 16 or 17
    -- digits otherwise; subnormals have fewer significant bits, so try every length.
    local s
    for p = (math.abs(v) < 2.2250738585072014e-308) and 0 or 14, 16 do
      s = fmt('%.' .. p .. 'e', v)
      if tonumber(s) == v then
        break
      end
    end
    -- s: [-]d.ddddde[+-]xx
    local sign, d1, rest, ex = s:match('^(-?)(%d)%.?(%d*)e([-+]%d+)$')
    local digits = gsub(d1 .. rest, '0+$', '')
    if digits == '' then
      digits = '0'
    end
    local len = #digits
    local e = tonumber(ex) -- the exponent of the first digit
    local out
    if e >= -5 and e <= 15 then
      if len - 1 <= e then
        out = digits .. string.rep('0', e - (len - 1)) .. '.0'
      elseif e >= 0 then
        out = sub(digits, 1, e + 1) .. '.' .. sub(digits, e + 2)
      else
        out = '0.' .. string.rep('0', -e - 1) .. digits
      end
    else
      out = sub(digits, 1, 1) .. (len > 1 and ('.' .. sub(digits, 2)) or '') .. 'e' .. (e >= 0 and '+' or '-') .. math.abs(e)
    end
    return sign .. out
  end

  ---------------------------------------------------------------------------------------
  -- Parameters, as src/proto/params.rs reads them (same messages).

  local function is_num(v)
    return type(v) == 'table' and v.num ~= nil
  end

  local function p_raw(p, name)
    local v = p.map[name]
    if v == NULL then
      return nil
    end
    return v
  end

  local function p_has(p, name)
    return p_raw(p, name) ~= nil
  end

  local function missing(name)
    invalid("Missing parameter '" .. name .. "'")
  end

  local function wrong(name, what)
    invalid("Parameter '" .. name .. "' must be " .. what)
  end

  local function p_str(p, name)
    local v = p_raw(p, name)
    if v == nil then
      missing(name)
    end
    if type(v) ~= 'string' then
      wrong(name, 'a string')
    end
    return v
  end

  local function p_opt_str(p, name)
    local v = p_raw(p, name)
    if v == nil then
      return nil
    end
    if type(v) ~= 'string' then
      wrong(name, 'a string')
    end
    return v
  end

  -- A stored value: a string, or a number kept as the text the client sent.
  local function value_text(v)
    if type(v) == 'string' then
      return v
    elseif is_num(v) then
      return v.num
    end
    return nil
  end

  local function p_value(p, name)
    local v = p_raw(p, name)
    if v == nil then
      missing(name)
    end
    local t = value_text(v)
    if not t then
      wrong(name, 'a string or a number')
    end
    return t
  end

  local function p_opt_bool(p, name)
    local v = p_raw(p, name)
    if v == nil then
      return false
    end
    if v ~= true and v ~= false then
      wrong(name, 'a boolean')
    end
    return v
  end

  -- Whether decimal digit text `d` (no sign, no leading zeros) is at most `max`.
  local function digits_le(d, max)
    if #d ~= #max then
      return #d < #max
    end
    for i = 1, #d do
      local x, y = byte(d, i), byte(max, i)
      if x ~= y then
        return x < y
      end
    end
    return true
  end

  local function strip_zeros(digits)
    local t = gsub(concat(digits), '^0+', '')
    return t == '' and '0' or t
  end

  -- Sum of two non-negative decimal integers (text), exact at any size.
  local function dec_add(a, b)
    local out, carry, i, j = {}, 0, #a, #b
    while i > 0 or j > 0 or carry > 0 do
      local d = carry + (i > 0 and byte(a, i) - 48 or 0) + (j > 0 and byte(b, j) - 48 or 0)
      table.insert(out, 1, d % 10)
      carry = floor(d / 10)
      i, j = i - 1, j - 1
    end
    return strip_zeros(out)
  end

  -- a - b for decimal integers a >= b (0 when a < b).
  local function dec_sub(a, b)
    if not digits_le(b, a) then
      return '0'
    end
    local out, borrow, i, j = {}, 0, #a, #b
    while i > 0 do
      local d = (byte(a, i) - 48) - borrow - (j > 0 and byte(b, j) - 48 or 0)
      borrow = d < 0 and 1 or 0
      table.insert(out, 1, d % 10)
      i, j = i - 1, j - 1
    end
    return strip_zeros(out)
  end

  -- ceil(n / 1000) for a decimal integer n.
  local function dec_ceil_div_1000(n)
    if n == '0' then
      return '0'
    end
    if #n <= 3 then
      return '1'
    end
    local q = sub(n, 1, #n - 3)
    if sub(n, -3) ~= '000' then
      q = dec_add(q, '1')
    end
    return q
  end

  -- An i64 from JSON number text (serde's rules: no fraction, no exponent, in range), as
  -- canonical decimal text.
  local function i64_text(raw)
    local neg, d = raw:match('^(-?)(%d+)$')
    if not d or (#d > 1 and sub(d, 1, 1) == '0') then
      return nil
    end
    if neg == '-' then
      if not digits_le(d, '9223372036854775808') then
        return nil
      end
      return d == '0' and '0' or ('-' .. d)
    end
    if not digits_le(d, '9223372036854775807') then
      return nil
    end
    return d
  end

  local function p_opt_i64(p, name)
    local v = p_raw(p, name)
    if v == nil then
      return nil
    end
    local t = is_num(v) and i64_text(v.num)
    if not t then
      wrong(name, 'an integer (64-bit)')
    end
    return t
  end

  local function p_i64(p, name)
    local t = p_opt_i64(p, name)
    if t == nil then
      missing(name)
    end
    return t
  end

  -- A non-negative integer (as a Lua number: exact up to 2^53, larger counts mean "all").
  local function p_opt_usize(p, name)
    local v = p_raw(p, name)
    if v == nil then
      return nil
    end
    local d = is_num(v) and v.num:match('^(%d+)$')
    if not d or (#d > 1 and sub(d, 1, 1) == '0') or not digits_le(d, '18446744073709551615') then
      wrong(name, 'a non-negative integer')
    end
    return tonumber(d)
  end

  local function p_opt_f64(p, name)
    local v = p_raw(p, name)
    if v == nil then
      return nil
    end
    local n = is_num(v) and tonumber(v.num)
    if not n or n ~= n or n == math.huge or n == -math.huge then
      wrong(name, 'a number')
    end
    return n
  end

  local function p_str_list(p, name)
    local v = p_raw(p, name)
    if v == nil then
      missing(name)
    end
    if type(v) ~= 'table' or not v.arr then
      wrong(name, 'an array of strings')
    end
    if #v.list == 0 then
      wrong(name, 'a non-empty array')
    end
    for _, s in ipairs(v.list) do
      if type(s) ~= 'string' then
        wrong(name, 'an array of strings')
      end
    end
    return v.list
  end

  local function p_value_list(p, name)
    local v = p_raw(p, name)
    if v == nil then
      missing(name)
    end
    if type(v) ~= 'table' or not v.arr then
      wrong(name, 'an array of strings')
    end
    if #v.list == 0 then
      wrong(name, 'a non-empty array')
    end
    local out = {}
    for i, s in ipairs(v.list) do
      local t = value_text(s)
      if not t then
        wrong(name, 'an array of strings or numbers')
      end
      out[i] = t
    end
    return out
  end

  local function p_one_or_many(p, single, many)
    if p_has(p, single) then
      return { p_str(p, single) }
    end
    if p_has(p, many) then
      return p_str_list(p, many)
    end
    invalid("Missing parameter '" .. single .. "' or '" .. many .. "'")
  end

  local function p_object(p, name)
    local v = p_raw(p, name)
    if v == nil then
      missing(name)
    end
    if type(v) ~= 'table' or not v.obj then
      wrong(name, 'an object')
    end
    if v.dup then
      invalid("Parameter '" .. name .. "' names '" .. v.dup .. "' twice")
    end
    return v
  end

  -- A non-empty object of stored values (string.mset's pairs, hash.set's fields): its
  -- names in order, and their values as text.
  local function p_value_object(p, name)
    local obj = p_object(p, name)
    if #obj.names == 0 then
      invalid("Parameter '" .. name .. "' must be a non-empty object")
    end
    local vals = {}
    for i, k in ipairs(obj.names) do
      local v = value_text(obj.map[k])
      if not v then
        invalid("Value of '" .. k .. "' in '" .. name .. "' must be a string or a number")
      end
      vals[i] = v
    end
    return obj.names, vals
  end

  local function p_array(p, name)
    local v = p_raw(p, name)
    if v == nil then
      missing(name)
    end
    if type(v) ~= 'table' or not v.arr then
      wrong(name, 'an array')
    end
    return v.list
  end

  ---------------------------------------------------------------------------------------
  -- The state of one FCALL: the clock the gateway passed, the rev (kept in Lua and
  -- written back once), the changes of the operation running, and what is known about
  -- the deadlines of the keys touched so far.

  local S

  -- Most fields in one stream entry (unpack, and so one redis.call, takes at most a few
  -- thousand arguments): past ENTRY_FIELDS the entry is written when the next operation
  -- starts; past ENTRY_FIELDS_MAX even inside an operation.
  local ENTRY_FIELDS = 2000
  local ENTRY_FIELDS_MAX = 7000

  -- The changes of the call not yet written: the fields of the next stream entry.
  local function new_entry()
    S.pend, S.pn = { 't', S.now_text }, 2
    -- the rev of the last change put in it (nil: the next one writes its rev), and the
    -- event named last (each event is named once per run of equal ones)
    S.prev_rev, S.prev_e = nil, nil
  end

  local function begin_call(now, backlog)
    local re = rcall('MGET', K_REV, K_EPOCH)
    local rev = tonumber(re[1] or '0') or 0
    S = {
      now = now,
      -- the clock as stream field text, formatted once per call (number formatting is
      -- one of the dearer things Lua does inside Redis)
      now_text = int(now),
      backlog = backlog,
      rev = rev,
      rev0 = rev,
      -- the epoch read at the start (a flush or dbx_init may set a new one)
      epoch = re[2] or nil,
      -- key -> deadline (number) or false (no deadline / missing), once checked
      dl = {},
      -- the id rev and seq of the last entry this call wrote
      xrev = nil,
      xseq = 0,
    }
    new_entry()
  end

  -- S.rev as text, formatted once per rev.
  local function rev_text()
    if S.rt_of ~= S.rev then
      S.rt, S.rt_of = int(S.rev), S.rev
    end
    return S.rt
  end

  -- Write the pending changes as one stream entry, id <rev of its last change>-<seq>
  -- (seq 2, 3 … only for the later parts of one operation too large for one entry).
  -- One XADD per call instead of one per change: XADD is the dearest command a write
  -- runs (docs/BACKEND.md section 3).
  local function write_entry()
    if S.pn <= 2 then
      return
    end
    local r = S.prev_rev
    S.xseq = S.xrev == r and S.xseq + 1 or 1
    S.xrev = r
    rcall('XADD', K_CHANGES, (r == S.rev and rev_text() or int(r)) .. '-' .. S.xseq, unpack(S.pend, 1, S.pn))
    S.added = true
    new_entry()
  end

  -- One change at `rev` (an operation's changes share its rev). The entry layout
  -- (docs/BACKEND.md section 3) names no rev: the id is the last change's, `k` is a
  -- change at the rev after the one before it, `m` one at the same rev (the other keys
  -- of an operation), so the revs inside an entry are contiguous; `e` is written only
  -- when the event differs from the one before, `ep` before a change that starts an
  -- epoch.
  local function record(rev, key, event, epoch)
    local n = S.pn
    local prev = S.prev_rev
    if rev ~= prev then
      -- a new operation: an entry holding a part of a large one ends with it, a long
      -- entry ends here, and so does one whose revs would not be contiguous
      if S.split or n >= ENTRY_FIELDS or (prev and rev ~= prev + 1) then
        S.split = false
        write_entry()
        n, prev = S.pn, nil
      end
    elseif n >= ENTRY_FIELDS_MAX then
      S.split = true
      write_entry()
      n, prev = S.pn, nil
    end
    local p = S.pend
    if event ~= S.prev_e then
      p[n + 1], p[n + 2], n = 'e', event, n + 2
      S.prev_e = event
    end
    if epoch then
      p[n + 1], p[n + 2], n = 'ep', epoch, n + 2
    end
    p[n + 1], p[n + 2] = rev == prev and 'm' or 'k', key
    S.pn, S.prev_rev = n + 2, rev
  end

  -- The end of a call (also of one that failed half way, see `guarded`): the changes
  -- and the rev are written.
  local function end_call()
    if S.ended then
      return
    end
    S.ended = true
    write_entry()
    if S.rev ~= S.rev0 then
      rcall('SET', K_REV, rev_text())
    end
    -- Trimming by rev (entry ids are revs): the stream keeps at least the last
    -- `backlog` revs, whatever number of entries holds them. Once the rev passes a
    -- multiple of 64 is often enough: Redis trims whole nodes of ~100 entries anyway.
    if S.added and floor(S.rev / 64) ~= floor(S.rev0 / 64) and S.rev > S.backlog then
      rcall('XTRIM', K_CHANGES, 'MINID', '~', int(S.rev - S.backlog + 1))
    end
  end

  -- A change with a rev of its own (`expired`).
  local function record_own(key, event)
    S.rev = S.rev + 1
    record(S.rev, key, event)
  end

  -- The running operation changed `key` (all its changes share one rev, given at its end).
  local function touched(key)
    S.changes[#S.changes + 1] = key
  end

  -- Expire `key` first if its deadline has passed (or Redis already dropped it for its
  -- native PEXPIREAT): removed, recorded as `expired` with a rev of its own, as the
  -- embedded store's lazy expiry does. Returns the key's deadline, or false.
  local function live(key)
    local d = S.dl[key]
    if d ~= nil then
      return d
    end
    if S.any_dl == nil then
      -- Without any TTL in the database (common), one EXISTS per call spares a ZSCORE
      -- per key.
      S.any_dl = rcall('EXISTS', K_DEADLINES) == 1
    end
    if not S.any_dl then
      S.dl[key] = false
      return false
    end
    d = rcall('ZSCORE', K_DEADLINES, key)
    if d then
      d = tonumber(d)
      if d <= S.now or rcall('EXISTS', key) == 0 then
        rcall('DEL', key)
        rcall('ZREM', K_DEADLINES, key)
        if d >= MAX_EXACT then
          rcall('HDEL', K_BIG, key)
        end
        record_own(key, 'expired')
        d = false
      end
    else
      d = false
    end
    S.dl[key] = d
    return d
  end

  local function is_big(d)
    return type(d) == 'string' or (type(d) == 'number' and d >= MAX_EXACT)
  end

  local function at_text(at)
    return type(at) == 'string' and at or int(at)
  end

  -- The deadline for Redis's native expiry.
  local function native_at(at)
    if type(at) == 'string' and not digits_le(at, NATIVE_MAX) then
      return NATIVE_MAX
    end
    return at_text(at)
  end

  -- The exact deadline of `key` whose deadline is `d` (as live() returned it).
  local function exact_deadline(key, d)
    if type(d) == 'number' and d >= MAX_EXACT then
      return rcall('HGET', K_BIG, key) or int(d)
    end
    return d
  end

  -- Record the deadline of `key` (false: none). `live(key)` has run before.
  local function set_deadline(key, at)
    local old = S.dl[key]
    if at then
      rcall('ZADD', K_DEADLINES, at_text(at), key)
      S.any_dl = true
      if type(at) == 'string' then
        rcall('HSET', K_BIG, key, at)
      elseif old == nil or is_big(old) then
        rcall('HDEL', K_BIG, key)
      end
    elseif old ~= false then
      rcall('ZREM', K_DEADLINES, key)
      if old == nil or is_big(old) then
        rcall('HDEL', K_BIG, key)
      end
    end
    S.dl[key] = at
  end

  -- After an operation that may have emptied a collection (Redis deletes empty ones):
  -- drop the deadline of a key that is gone.
  local function maybe_gone(key)
    if S.dl[key] and rcall('EXISTS', key) == 0 then
      set_deadline(key, false)
    end
  end

  -- Run a Redis command; a WRONGTYPE reply becomes DBX's wrong_type.
  local function rc(...)
    local r = rpcall(...)
    if type(r) == 'table' and r.err then
      if find(r.err, '^WRONGTYPE') then
        wrong_type()
      end
      error(r, 0)
    end
    return r
  end

  local function key_type(key)
    return rcall('TYPE', key).ok
  end

  -- The key's type must be `want` (or the key missing). Returns whether it exists.
  local function check_type(key, want)
    local t = key_type(key)
    if t == 'none' then
      return false
    end
    if t ~= want then
      wrong_type()
    end
    return true
  end

  -- Seconds (a double) to ms, rounded, as the embedded secs_to_ms; then an absolute
  -- deadline at least 1 ms away.
  -- A deadline past 2^53 is decimal text, saturating at 2^64-1 as the embedded u64.
  local function deadline_after(secs)
    local x = secs * 1000
    -- Rust's round(); from 2^52 on every double is whole (and x + 0.5 could round up).
    local ms = x >= 4503599627370496 and x or floor(x + 0.5)
    if ms < 1 then
      ms = 1
    end
    if ms >= 18446744073709551616 then
      return U64_MAX
    end
    local at = S.now + ms
    if at < MAX_EXACT then
      return at
    end
    local t = dec_add(int(S.now), fmt('%.0f', ms))
    if not digits_le(t, U64_MAX) then
      return U64_MAX
    end
    return t
  end

  -- Whole seconds left, rounded up (ms_to_ttl_secs), for `key` with deadline `at`.
  local function ttl_secs(key, at)
    if is_big(at) then
      return dec_ceil_div_1000(dec_sub(exact_deadline(key, at), int(S.now)))
    end
    local left = at - S.now
    if left < 0 then
      left = 0
    end
    return int(ceil(left / 1000))
  end

  -- Unpack in chunks: Lua's C stack limits how many arguments one call can take.
  local CHUNK = 1000

  local function unpack_range(t, i, j)
    return unpack(t, i, j)
  end

  -- `cmd key args…` in calls of at most CHUNK arguments: the sum of their integer replies
  -- (HDEL, SADD, SREM, ZREM: how many were removed or added).
  local function chunked_sum(cmd, key, args)
    local n = 0
    for i = 1, #args, CHUNK do
      n = n + rcall(cmd, key, unpack_range(args, i, math.min(i + CHUNK - 1, #args)))
    end
    return n
  end

  ---------------------------------------------------------------------------------------
  -- Methods. Each returns the fields of its result object as JSON text (without braces).

  local M = {}
  local WRITES = {}

  local function method(name, is_write, fn)
    M[name] = fn
    WRITES[name] = is_write
  end

  -- hash.len, set.card, zset.card, list.len: the size of a collection (`cmd`, which
  -- answers 0 for a missing key and WRONGTYPE for another type), in result `field`.
  local function size(name, cmd, field)
    method(name, false, function(p)
      local key = p_str(p, 'key')
      live(key)
      return '"' .. field .. '":' .. rc(cmd, key)
    end)
  end

  -- hash.exists, set.contains: whether `param` (a field, a member) is in the collection.
  local function membership(name, cmd, param, field)
    method(name, false, function(p)
      local key = p_str(p, 'key')
      local item = p_str(p, param)
      live(key)
      return '"' .. field .. '":' .. jbool(rc(cmd, key, item) == 1)
    end)
  end

  -- hash.del, set.remove, zset.remove: remove `one`/`many` from a collection of `typ`
  -- with `cmd`; the count goes in `field`, and an emptied collection is gone.
  local function removal(name, typ, cmd, one, many, field)
    method(name, true, function(p)
      local key = p_str(p, 'key')
      local items = p_one_or_many(p, one, many)
      live(key)
      local n = 0
      if check_type(key, typ) then
        n = chunked_sum(cmd, key, items)
      end
      if n > 0 then
        touched(key)
        maybe_gone(key)
      end
      return '"' .. field .. '":' .. n
    end)
  end

  -- string.*

  local function string_get_value(key)
    return rc('GET', key)
  end

  method('string.get', false, function(p)
    local key = p_str(p, 'key')
    local d = live(key)
    local v = string_get_value(key)
    if not v then
      key_not_found(key)
    end
    return '"value":' .. jstr(v) .. ',"ttl":' .. (d and ttl_secs(key, d) or 'null')
  end)

  local function ttl_deadline(p)
    local t = p_opt_f64(p, 'ttl')
    if t == nil then
      return false
    end
    if t <= 0 then
      invalid("Parameter 'ttl' must be greater than 0")
    end
    return deadline_after(t)
  end

  method('string.set', true, function(p)
    local key = p_str(p, 'key')
    local value = p_value(p, 'value')
    local at = ttl_deadline(p)
    local nx, xx, want_prev = p_opt_bool(p, 'nx'), p_opt_bool(p, 'xx'), p_opt_bool(p, 'get')
    if nx and xx then
      invalid("Parameters 'nx' and 'xx' exclude each other")
    end
    live(key)
    local prev
    local exists = false
    if want_prev then
      prev = string_get_value(key)
      exists = prev ~= false
    elseif nx or xx then
      exists = rcall('EXISTS', key) == 1
    end
    local do_set = not ((nx and exists) or (xx and not exists))
    if do_set then
      if at then
        rcall('SET', key, value, 'PXAT', native_at(at))
      else
        rcall('SET', key, value)
      end
      set_deadline(key, at)
      touched(key)
    end
    local out = '"set":' .. jbool(do_set)
    if want_prev then
      out = out .. ',"previous":' .. (prev and jstr(prev) or 'null')
    end
    return out
  end)

  method('string.mget', false, function(p)
    local keys = p_str_list(p, 'keys')
    local out = {}
    for i, k in ipairs(keys) do
      live(k)
    end
    for i = 1, #keys, CHUNK do
      local vals = rcall('MGET', unpack_range(keys, i, math.min(i + CHUNK - 1, #keys)))
      for j = 1, #vals do
        local v = vals[j]
        out[#out + 1] = v and jstr(v) or 'null'
      end
    end
    return '"values":[' .. concat(out, ',') .. ']'
  end)

  method('string.mset', true, function(p)
    local names, vals = p_value_object(p, 'pairs')
    for i, k in ipairs(names) do
      live(k)
      rcall('SET', k, vals[i])
      set_deadline(k, false)
      touched(k)
    end
    return '"set":' .. #names
  end)

  -- A stored integer as Rust's i64 parse reads it (sign, leading zeros allowed), as
  -- canonical text; nil if it is not one.
  local function stored_i64(v)
    local sign, d = v:match('^([+-]?)(%d+)$')
    if not d then
      return nil
    end
    d = gsub(d, '^0+', '')
    if d == '' then
      return '0'
    end
    if sign == '-' then
      if not digits_le(d, '9223372036854775808') then
        return nil
      end
      return '-' .. d
    end
    if not digits_le(d, '9223372036854775807') then
      return nil
    end
    return d
  end

  local function add_to_string(key, by)
    live(key)
    local v = string_get_value(key)
    if not v then
      rcall('SET', key, by)
      touched(key)
      return by
    end
    local cur = stored_i64(v)
    if not cur then
      throw('not_integer', 'Value is not an integer or out of range')
    end
    if cur ~= v then
      -- Redis's INCRBY reads only canonical integers; the embedded store reads `+5`/`007`.
      rcall('SET', key, cur, 'KEEPTTL')
    end
    if by == '0' then
      if cur ~= v then
        touched(key)
      end
      return cur
    end
    local r = rpcall('INCRBY', key, by)
    if type(r) == 'table' and r.err then
      throw('not_integer', 'Increment would overflow')
    end
    touched(key)
    return rcall('GET', key)
  end

  method('string.incr', true, function(p)
    local by = p_opt_i64(p, 'by') or '1'
    local key = p_str(p, 'key')
    return '"value":' .. add_to_string(key, by)
  end)

  method('string.decr', true, function(p)
    local by = p_opt_i64(p, 'by') or '1'
    if by == '-9223372036854775808' then
      throw('not_integer', 'Increment would overflow')
    end
    if by ~= '0' then
      by = (sub(by, 1, 1) == '-') and sub(by, 2) or ('-' .. by)
    end
    local key = p_str(p, 'key')
    return '"value":' .. add_to_string(key, by)
  end)

  method('string.append', true, function(p)
    local key = p_str(p, 'key')
    local value = p_value(p, 'value')
    live(key)
    check_type(key, 'string')
    local len = rcall('APPEND', key, value)
    if value ~= '' or len == 0 then
      touched(key)
    end
    return '"length":' .. int(len)
  end)

  method('string.strlen', false, function(p)
    local key = p_str(p, 'key')
    live(key)
    return '"length":' .. int(rc('STRLEN', key))
  end)

  -- key.*

  local function delete_key(k)
    live(k)
    local n = rcall('DEL', k)
    if n > 0 then
      set_deadline(k, false)
    end
    return n > 0
  end

  method('key.del', true, function(p)
    local keys = p_one_or_many(p, 'key', 'keys')
    local n = 0
    for _, k in ipairs(keys) do
      if delete_key(k) then
        n = n + 1
        touched(k)
      end
    end
    return '"deleted":' .. n
  end)

  local function exists(k)
    live(k)
    return rcall('EXISTS', k) == 1
  end

  method('key.exists', false, function(p)
    if p_has(p, 'key') then
      return '"exists":' .. jbool(exists(p_str(p, 'key')))
    end
    local keys = p_one_or_many(p, 'key', 'keys')
    local n = 0
    for _, k in ipairs(keys) do
      if exists(k) then
        n = n + 1
      end
    end
    return '"count":' .. n
  end)

  method('key.type', false, function(p)
    local key = p_str(p, 'key')
    live(key)
    return '"type":"' .. key_type(key) .. '"'
  end)

  method('key.expire', true, function(p)
    local key = p_str(p, 'key')
    local t = p_opt_f64(p, 'ttl')
    if t == nil then
      missing('ttl')
    end
    local updated
    if t <= 0 then
      -- As Redis EXPIRE with a non-positive TTL: delete.
      updated = delete_key(key)
    else
      local at = deadline_after(t)
      live(key)
      updated = rcall('PEXPIREAT', key, native_at(at)) == 1
      if updated then
        set_deadline(key, at)
      end
    end
    if updated then
      touched(key)
    end
    return '"updated":' .. jbool(updated)
  end)

  method('key.ttl', false, function(p)
    local key = p_str(p, 'key')
    local d = live(key)
    if rcall('EXISTS', key) == 0 then
      key_not_found(key)
    end
    return '"ttl":' .. (d and ttl_secs(key, d) or 'null')
  end)

  method('key.persist', true, function(p)
    local key = p_str(p, 'key')
    local d = live(key)
    if d then
      rcall('PERSIST', key)
      set_deadline(key, false)
      touched(key)
    end
    return '"updated":' .. jbool(d and true or false)
  end)

  method('key.rename', true, function(p)
    local key = p_str(p, 'key')
    local new_key = p_str(p, 'new_key')
    local nx = p_opt_bool(p, 'nx')
    local d = live(key)
    if rcall('EXISTS', key) == 0 then
      key_not_found(key)
    end
    if key == new_key then
      return '"renamed":' .. jbool(not nx)
    end
    live(new_key)
    if nx and rcall('EXISTS', new_key) == 1 then
      return '"renamed":false'
    end
    -- RENAME moves the TTL with the value, as the embedded store does.
    local at = d and exact_deadline(key, d)
    rcall('RENAME', key, new_key)
    set_deadline(new_key, false)
    set_deadline(key, false)
    if at then
      set_deadline(new_key, at)
    end
    touched(key)
    touched(new_key)
    return '"renamed":true'
  end)

  -- Most keys one key.scan call visits, whatever `count` asks for (as embedded).
  local MAX_SCAN_COUNT = 100000
  local SCAN_TYPES = { string = true, hash = true, set = true, zset = true, list = true }

  -- Cursors this library hands out are Redis's SCAN cursor followed by SCAN_CHECK_LEN
  -- check digits (a digest of the cursor). Why: Redis's SCAN accepts any number as a
  -- position — it masks the cursor to its table size — so a cursor the library never issued
  -- (a made-up "99999999", one from another store) would silently resume somewhere in the
  -- table and return keys, where the embedded store answers a cursor past its table as done
  -- (`"cursor":"0","keys":[]`). With the check, a cursor whose digits do not match is
  -- recognised as not ours and answered as done, like the embedded store; a cursor we did
  -- issue decodes to exactly Redis's cursor, so Redis's guarantee (every key present for the
  -- whole scan is returned at least once) is untouched. "0" stays "0" both ways (start /
  -- done). The digest is not a secret: a forged cursor that passes can only restart the scan
  -- at some position of the same table, which any client can do with "0". The check is
  -- deterministic (no per-store salt), so a cursor stays valid across gateways, restarts
  -- and failovers of the same data, as Redis's own cursor does. Four digits keep the issued
  -- cursor within a u64 for any Redis cursor below 10^15 (a table of 2^49 buckets), so
  -- the cursor stays a decimal u64 string as in docs/PROTOCOL.md.
  local SCAN_CHECK_LEN = 4
  local function scan_check(c)
    return fmt('%04d', tonumber(sub(redis.sha1hex('dbx-scan:' .. c), 1, 7), 16) % 10000)
  end

  method('key.scan', false, function(p)
    local given = p_opt_str(p, 'cursor') or '0'
    if not find(given, '^%d+$') or not digits_le(gsub(given, '^0+(%d)', '%1'), '18446744073709551615') then
      invalid("Parameter 'cursor' is not a cursor returned by key.scan")
    end
    given = gsub(given, '^0+(%d)', '%1')
    local cursor = '0'
    local ours = true
    if given ~= '0' then
      cursor = sub(given, 1, #given - SCAN_CHECK_LEN)
      -- Too short to carry a check, or a check that does not match: not a cursor of
      -- ours. (`given` has no leading zero, so neither has `cursor`.)
      ours = cursor ~= '' and scan_check(cursor) == sub(given, -SCAN_CHECK_LEN)
    end
    local count = p_opt_usize(p, 'count') or 10
    if count < 1 then
      count = 1
    elseif count > MAX_SCAN_COUNT then
      count = MAX_SCAN_COUNT
    end
    local pattern = p_opt_str(p, 'match')
    local kind = p_opt_str(p, 'type')
    if kind ~= nil and not SCAN_TYPES[kind] then
      invalid("Parameter 'type' must be one of string, hash, set, zset, list")
    end
    if not ours then
      -- Done, as embedded for a cursor past its table (after the other parameters are
      -- checked, as embedded checks them whatever the cursor).
      return '"cursor":"0","keys":[]'
    end
    local args = { 'SCAN', cursor, 'COUNT', count }
    if pattern then
      args[#args + 1] = 'MATCH'
      args[#args + 1] = pattern
    end
    if kind then
      args[#args + 1] = 'TYPE'
      args[#args + 1] = kind
    end
    local r = rcall(unpack(args))
    local out = {}
    for _, k in ipairs(r[2]) do
      -- DBX's own keys are never returned; a key past its deadline is expired here, as
      -- the embedded scan does.
      if sub(k, 1, #PREFIX) ~= PREFIX then
        live(k)
        if rcall('EXISTS', k) == 1 then
          out[#out + 1] = jstr(k)
        end
      end
    end
    local issued = r[1] == '0' and '0' or r[1] .. scan_check(r[1])
    return '"cursor":' .. jstr(issued) .. ',"keys":[' .. concat(out, ',') .. ']'
  end)

  -- hash.*

  local function hash_pairs(p)
    if p_has(p, 'field') then
      return { p_str(p, 'field') }, { p_value(p, 'value') }
    elseif p_has(p, 'fields') then
      return p_value_object(p, 'fields')
    end
    invalid("Missing parameter 'field' (with 'value') or 'fields'")
  end

  method('hash.get', false, function(p)
    local key = p_str(p, 'key')
    local field = p_opt_str(p, 'field')
    live(key)
    local exists = check_type(key, 'hash')
    if field then
      local v = exists and rcall('HGET', key, field)
      if v then
        return '"value":' .. jstr(v)
      end
      if not exists then
        key_not_found(key)
      end
      throw('not_found', "Field '" .. field .. "' not found in hash '" .. key .. "'")
    end
    local out = {}
    if exists then
      local flat = rcall('HGETALL', key)
      for i = 1, #flat, 2 do
        out[#out + 1] = jstr(flat[i]) .. ':' .. jstr(flat[i + 1])
      end
    end
    return '"fields":{' .. concat(out, ',') .. '}'
  end)

  method('hash.mget', false, function(p)
    local key = p_str(p, 'key')
    local fields = p_str_list(p, 'fields')
    live(key)
    check_type(key, 'hash')
    local out = {}
    for i = 1, #fields, CHUNK do
      local vals = rcall('HMGET', key, unpack_range(fields, i, math.min(i + CHUNK - 1, #fields)))
      for j = 1, #vals do
        out[#out + 1] = vals[j] and jstr(vals[j]) or 'null'
      end
    end
    return '"values":[' .. concat(out, ',') .. ']'
  end)

  method('hash.set', true, function(p)
    local key = p_str(p, 'key')
    local fields, vals = hash_pairs(p)
    live(key)
    check_type(key, 'hash')
    local created, changed = 0, false
    for i, f in ipairs(fields) do
      local old = rcall('HGET', key, f)
      if old ~= vals[i] then
        changed = true
        rcall('HSET', key, f, vals[i])
        if not old then
          created = created + 1
        end
      end
    end
    if changed then
      touched(key)
    end
    return '"created":' .. created
  end)

  removal('hash.del', 'hash', 'HDEL', 'field', 'fields', 'deleted')

  membership('hash.exists', 'HEXISTS', 'field', 'exists')
  size('hash.len', 'HLEN', 'length')

  local function jlist(items)
    local out = {}
    for i, v in ipairs(items) do
      out[i] = jstr(v)
    end
    return '[' .. concat(out, ',') .. ']'
  end

  method('hash.keys', false, function(p)
    local key = p_str(p, 'key')
    live(key)
    return '"fields":' .. jlist(rc('HKEYS', key))
  end)

  method('hash.values', false, function(p)
    local key = p_str(p, 'key')
    live(key)
    return '"values":' .. jlist(rc('HVALS', key))
  end)

  method('hash.incr', true, function(p)
    local key = p_str(p, 'key')
    local field = p_str(p, 'field')
    local by = p_opt_i64(p, 'by') or '1'
    live(key)
    check_type(key, 'hash')
    local v = rcall('HGET', key, field)
    if not v then
      rcall('HSET', key, field, by)
      touched(key)
      return '"value":' .. by
    end
    local cur = stored_i64(v)
    if not cur then
      throw('not_integer', 'Hash value is not an integer or out of range')
    end
    if cur ~= v then
      -- HINCRBY reads only canonical integers; the embedded store reads `+5`/`007`.
      rcall('HSET', key, field, cur)
    end
    if by == '0' then
      -- Adding 0 to an existing field changes nothing: no rev, no event.
      return '"value":' .. cur
    end
    local r = rpcall('HINCRBY', key, field, by)
    if type(r) == 'table' and r.err then
      throw('not_integer', 'Increment would overflow')
    end
    touched(key)
    return '"value":' .. rcall('HGET', key, field)
  end)

  -- set.*

  method('set.add', true, function(p)
    local key = p_str(p, 'key')
    local members = p_one_or_many(p, 'member', 'members')
    live(key)
    check_type(key, 'set')
    local n = chunked_sum('SADD', key, members)
    if n > 0 then
      touched(key)
    end
    return '"added":' .. n
  end)

  removal('set.remove', 'set', 'SREM', 'member', 'members', 'removed')

  method('set.members', false, function(p)
    local key = p_str(p, 'key')
    live(key)
    return '"members":' .. jlist(rc('SMEMBERS', key))
  end)

  membership('set.contains', 'SISMEMBER', 'member', 'contains')
  size('set.card', 'SCARD', 'count')

  -- The sets named by `keys`, expired and type-checked (a missing key is an empty set),
  -- then combined by Redis.
  local function set_algebra(cmd)
    return function(p)
      local keys = p_str_list(p, 'keys')
      -- One key after the other, as the embedded store: a wrong type stops before the
      -- keys after it are (lazily) expired.
      for _, k in ipairs(keys) do
        live(k)
        check_type(k, 'set')
      end
      if #keys <= CHUNK then
        return '"members":' .. jlist(rcall(cmd, unpack(keys)))
      end
      -- More keys than one Redis call can take from Lua: the first chunk in Redis, the
      -- rest key by key (union: merged; inter: kept if in every set; diff: dropped if in any).
      local cur = rcall(cmd, unpack_range(keys, 1, CHUNK))
      local seen = {}
      for _, m in ipairs(cur) do
        seen[m] = true
      end
      for i = CHUNK + 1, #keys do
        if cmd == 'SUNION' then
          for _, m in ipairs(rcall('SMEMBERS', keys[i])) do
            if not seen[m] then
              seen[m] = true
              cur[#cur + 1] = m
            end
          end
        elseif #cur > 0 then
          local keep, want = {}, cmd == 'SINTER' and 1 or 0
          for j = 1, #cur, CHUNK do
            local hit = rcall('SMISMEMBER', keys[i], unpack_range(cur, j, math.min(j + CHUNK - 1, #cur)))
            for h = 1, #hit do
              if hit[h] == want then
                keep[#keep + 1] = cur[j + h - 1]
              end
            end
          end
          cur = keep
        end
      end
      return '"members":' .. jlist(cur)
    end
  end

  method('set.inter', false, set_algebra('SINTER'))
  method('set.union', false, set_algebra('SUNION'))
  method('set.diff', false, set_algebra('SDIFF'))

  -- Counts past this are as good as "all" (and Redis takes no count above 2^63).
  local MAX_COUNT = 4503599627370496

  method('set.pop', true, function(p)
    local key = p_str(p, 'key')
    local count = p_opt_usize(p, 'count') or 1
    live(key)
    local popped = {}
    if check_type(key, 'set') and count > 0 then
      popped = rcall('SPOP', key, int(math.min(count, MAX_COUNT)))
    end
    if #popped > 0 then
      touched(key)
      maybe_gone(key)
    end
    return '"members":' .. jlist(popped)
  end)

  -- zset.*

  -- A score as Rust's f64 parse reads a string (after trim): decimal with optional
  -- exponent, or inf/infinity/nan in any case, with an optional sign.
  local function parse_score_text(s)
    s = s:match('^%s*(.-)%s*$')
    local sign, rest = s:match('^([+-]?)(.*)$')
    local l = rest:lower()
    if l == 'inf' or l == 'infinity' then
      return sign == '-' and -math.huge or math.huge
    end
    if
      not (find(rest, '^%d+%.?%d*$') or find(rest, '^%d*%.%d+$') or find(rest, '^%d+%.?%d*[eE][+-]?%d+$') or find(
        rest,
        '^%d*%.%d+[eE][+-]?%d+$'
      ))
    then
      return nil
    end
    return tonumber(sign .. rest)
  end

  local function score_of(v, name)
    local n
    if type(v) == 'string' then
      n = parse_score_text(v)
    elseif is_num(v) then
      n = tonumber(v.num)
      -- serde refuses a JSON number out of f64's range
      if n == math.huge or n == -math.huge then
        n = nil
      end
    end
    if n == nil or n ~= n then
      invalid("Parameter '" .. name .. "' must be a number, \"+inf\" or \"-inf\"")
    end
    return n
  end

  local function score_param(p, name)
    local v = p_raw(p, name)
    if v == nil then
      missing(name)
    end
    return score_of(v, name)
  end

  -- A double as Redis reads it back exactly.
  local function score_arg(v)
    if v == math.huge then
      return '+inf'
    elseif v == -math.huge then
      return '-inf'
    end
    return fmt('%.17g', v)
  end

  -- A range bound as Redis takes it: number, "(" number, ±inf.
  local function bound_param(p, name)
    local v = p_raw(p, name)
    if v == nil then
      missing(name)
    end
    if type(v) == 'string' then
      local s = v:match('^%s*(.-)%s*$')
      local excl = sub(s, 1, 1) == '('
      local n = parse_score_text(excl and sub(s, 2) or s)
      if excl and find(s, '^%(%s') then
        n = nil -- Rust parses what follows "(" without trimming it
      end
      if n == nil or n ~= n then
        invalid("Parameter '" .. name .. "' must be a number, \"-inf\", \"+inf\" or \"(\" + number")
      end
      return (excl and '(' or '') .. score_arg(n)
    end
    return score_arg(score_of(v, name))
  end

  local function zpairs(flat)
    local out = {}
    for i = 1, #flat, 2 do
      out[#out + 1] = '{"member":' .. jstr(flat[i]) .. ',"score":' .. score_text(tonumber(flat[i + 1])) .. '}'
    end
    return '"members":[' .. concat(out, ',') .. ']'
  end

  method('zset.add', true, function(p)
    local key = p_str(p, 'key')
    local members, scores = {}, {}
    if p_has(p, 'member') then
      members[1] = p_str(p, 'member')
      scores[1] = score_param(p, 'score')
    elseif p_has(p, 'members') then
      local list = p_array(p, 'members')
      if #list == 0 then
        invalid("Parameter 'members' must be a non-empty array")
      end
      for i, el in ipairs(list) do
        local bad = 'Each element of \'members\' must be {"member": string, "score": number}'
        if type(el) ~= 'table' or not el.obj then
          invalid(bad)
        end
        local m = el.map.member
        if type(m) ~= 'string' then
          invalid(bad)
        end
        members[i] = m
        scores[i] = score_param(el, 'score')
      end
    else
      invalid("Missing parameter 'member' (with 'score') or 'members'")
    end
    live(key)
    check_type(key, 'zset')
    local added, changed = 0, false
    for i, m in ipairs(members) do
      local old = rcall('ZSCORE', key, m)
      old = old and tonumber(old)
      if old ~= scores[i] then
        changed = true
        rcall('ZADD', key, score_arg(scores[i]), m)
        if not old then
          added = added + 1
        end
      end
    end
    if changed then
      touched(key)
    end
    return '"added":' .. added
  end)

  local function member_not_found(member, key)
    throw('not_found', "Member '" .. member .. "' not found in '" .. key .. "'")
  end

  method('zset.score', false, function(p)
    local key = p_str(p, 'key')
    local member = p_str(p, 'member')
    live(key)
    if not check_type(key, 'zset') then
      key_not_found(key)
    end
    local s = rcall('ZSCORE', key, member)
    if not s then
      member_not_found(member, key)
    end
    return '"score":' .. score_text(tonumber(s))
  end)

  method('zset.incr', true, function(p)
    local key = p_str(p, 'key')
    local member = p_str(p, 'member')
    local by = score_param(p, 'by')
    live(key)
    check_type(key, 'zset')
    local cur = rcall('ZSCORE', key, member)
    cur = cur and tonumber(cur)
    local new = (cur or 0) + by
    if new ~= new then
      invalid('Resulting score is not a number (NaN)')
    end
    if cur ~= new then
      -- A score that stays the same changes nothing: no rev, no event.
      rcall('ZADD', key, score_arg(new), member)
      touched(key)
    end
    return '"score":' .. score_text(new)
  end)

  removal('zset.remove', 'zset', 'ZREM', 'member', 'members', 'removed')

  method('zset.rank', false, function(p)
    local key = p_str(p, 'key')
    local member = p_str(p, 'member')
    local rev = p_opt_bool(p, 'rev')
    live(key)
    if not check_type(key, 'zset') then
      key_not_found(key)
    end
    local r = rcall(rev and 'ZREVRANK' or 'ZRANK', key, member)
    if not r then
      member_not_found(member, key)
    end
    return '"rank":' .. int(r)
  end)

  method('zset.range', false, function(p)
    local key = p_str(p, 'key')
    local start, stop = p_i64(p, 'start'), p_i64(p, 'stop')
    local rev = p_opt_bool(p, 'rev')
    live(key)
    if not check_type(key, 'zset') then
      return '"members":[]'
    end
    if rev then
      return zpairs(rcall('ZRANGE', key, start, stop, 'REV', 'WITHSCORES'))
    end
    return zpairs(rcall('ZRANGE', key, start, stop, 'WITHSCORES'))
  end)

  method('zset.range_by_score', false, function(p)
    local key = p_str(p, 'key')
    local min, max = bound_param(p, 'min'), bound_param(p, 'max')
    local offset = p_opt_usize(p, 'offset') or 0
    local limit = p_opt_usize(p, 'limit')
    local rev = p_opt_bool(p, 'rev')
    live(key)
    if not check_type(key, 'zset') or limit == 0 then
      return '"members":[]'
    end
    local args = { 'ZRANGE', key, min, max, 'BYSCORE' }
    if rev then
      args[3], args[4] = max, min
      args[#args + 1] = 'REV'
    end
    if offset > 0 or limit then
      args[#args + 1] = 'LIMIT'
      args[#args + 1] = int(math.min(offset, MAX_COUNT))
      args[#args + 1] = limit and int(math.min(limit, MAX_COUNT)) or '-1'
    end
    args[#args + 1] = 'WITHSCORES'
    return zpairs(rcall(unpack(args)))
  end)

  size('zset.card', 'ZCARD', 'count')

  -- list.*

  local function side_param(p, default_left)
    local s = p_opt_str(p, 'side')
    if s == nil then
      return default_left
    elseif s == 'left' then
      return true
    elseif s == 'right' then
      return false
    end
    invalid('Parameter \'side\' must be "left" or "right"')
  end

  method('list.push', true, function(p)
    local key = p_str(p, 'key')
    local values
    if p_has(p, 'value') then
      values = { p_value(p, 'value') }
    else
      values = p_value_list(p, 'values')
    end
    local left = side_param(p, false)
    live(key)
    check_type(key, 'list')
    local n = 0
    for i = 1, #values, CHUNK do
      n = rcall(left and 'LPUSH' or 'RPUSH', key, unpack_range(values, i, math.min(i + CHUNK - 1, #values)))
    end
    touched(key)
    return '"length":' .. int(n)
  end)

  method('list.pop', true, function(p)
    local key = p_str(p, 'key')
    local left = side_param(p, true)
    local count = p_opt_usize(p, 'count') or 1
    live(key)
    local popped = {}
    if check_type(key, 'list') and count > 0 then
      popped = rcall(left and 'LPOP' or 'RPOP', key, int(math.min(count, MAX_COUNT))) or {}
    end
    if #popped > 0 then
      touched(key)
      maybe_gone(key)
    end
    return '"values":' .. jlist(popped)
  end)

  method('list.range', false, function(p)
    local key = p_str(p, 'key')
    local start, stop = p_i64(p, 'start'), p_i64(p, 'stop')
    live(key)
    return '"values":' .. jlist(rc('LRANGE', key, start, stop))
  end)

  size('list.len', 'LLEN', 'length')

  method('list.index', false, function(p)
    local key = p_str(p, 'key')
    local i = p_i64(p, 'index')
    live(key)
    if not check_type(key, 'list') then
      key_not_found(key)
    end
    local v = rcall('LINDEX', key, i)
    if not v then
      throw('not_found', 'Index ' .. i .. " is out of range for list '" .. key .. "'")
    end
    return '"value":' .. jstr(v)
  end)

  method('list.trim', true, function(p)
    local key = p_str(p, 'key')
    local start, stop = p_i64(p, 'start'), p_i64(p, 'stop')
    live(key)
    local before, after = 0, 0
    if check_type(key, 'list') then
      before = rcall('LLEN', key)
      rcall('LTRIM', key, start, stop)
      after = rcall('LLEN', key)
    end
    if after ~= before then
      touched(key)
      maybe_gone(key)
    end
    return '"length":' .. int(after)
  end)

  -- server.*

  local function client_keys()
    local n = rcall('DBSIZE')
    for _, k in ipairs(RESERVED) do
      n = n - rcall('EXISTS', k)
    end
    return n
  end

  local function new_epoch(old)
    local t = rcall('TIME')
    local e
    repeat
      e = fmt('%08x%05x%03x', tonumber(t[1]) % 4294967296, tonumber(t[2]) % 1048576, math.random(0, 4095))
    until e ~= old
    rcall('SET', K_EPOCH, e)
    return e
  end

  method('server.dbsize', false, function()
    return '"keys":' .. int(client_keys())
  end)

  method('server.flush', true, function()
    local n = client_keys()
    -- FLUSHDB, keeping DBX's history: the change stream, the rev and the library version
    -- survive (dumped and restored); the deadlines go with the keys.
    local keep = {}
    for _, k in ipairs({ K_CHANGES, K_LIB }) do
      local d = rcall('DUMP', k)
      if d then
        keep[#keep + 1] = { k, d }
      end
    end
    local old = rcall('GET', K_EPOCH)
    rcall('FLUSHDB')
    for _, kd in ipairs(keep) do
      rcall('RESTORE', kd[1], 0, kd[2])
    end
    S.rev0 = -1 -- the rev key is gone: write it back at the end
    S.dl = {}
    S.any_dl = false
    S.epoch = new_epoch(old)
    touched('')
    return '"flushed":' .. int(n)
  end)

  method('server.ping', false, function()
    return '"pong":true'
  end)

  method('server.time', false, function()
    return '"unix_ms":' .. int(S.now)
  end)

  ---------------------------------------------------------------------------------------
  -- Operations and functions.

  -- Names of parameters that name keys: a key under the reserved prefix is refused.
  local function bad(k)
    if type(k) == 'string' and sub(k, 1, #PREFIX) == PREFIX then
      invalid("Key '" .. k .. "' is reserved: the prefix '" .. PREFIX .. "' belongs to DBX's own bookkeeping")
    end
  end

  local function check_reserved(p)
    bad(p.map.key)
    bad(p.map.new_key)
    local keys = p.map.keys
    if type(keys) == 'table' and keys.arr then
      for _, k in ipairs(keys.list) do
        bad(k)
      end
    end
    local pairs_ = p.map.pairs
    if type(pairs_) == 'table' and pairs_.obj then
      for _, k in ipairs(pairs_.names) do
        bad(k)
      end
    end
  end

  local EMPTY = { obj = true, names = {}, map = {} }

  local function run_op(op)
    if type(op) ~= 'table' or not op.obj then
      throw('invalid_request', 'An operation must be an object')
    end
    local name = op.map.method
    if type(name) ~= 'string' then
      throw('invalid_request', "Missing or invalid 'method'")
    end
    if name == 'batch' then
      throw('invalid_request', 'A batch may not contain a batch')
    end
    local fn = M[name]
    if not fn then
      throw('method_not_found', "Unknown method '" .. name .. "'")
    end
    local p = op.map.params
    if p == nil or p == NULL then
      p = EMPTY
    elseif type(p) ~= 'table' or not p.obj then
      throw('invalid_request', "'params' must be an object")
    elseif p.dup then
      throw('invalid_request', "Invalid JSON: duplicate field '" .. p.dup .. "' in 'params'")
    end
    S.method = name
    check_reserved(p)
    return name, fn(p)
  end

  local function error_json(e)
    if type(e) == 'table' and e.dbx then
      return '{"error":{"code":"' .. e.code .. '","message":' .. jstr(e.message) .. '}}'
    end
    local msg = type(e) == 'table' and (e.err or e.message) or tostring(e)
    return '{"error":{"code":"internal","message":' .. jstr('Redis: ' .. tostring(msg)) .. '}}'
  end

  local function epoch_now()
    if S.epoch then
      return S.epoch
    end
    local e = rcall('GET', K_EPOCH)
    if not e then
      e = new_epoch(nil)
    end
    S.epoch = e
    return e
  end

  local function parse_int_arg(v, what)
    local n = tonumber(v)
    if not n or n < 0 or n ~= floor(n) then
      error('dbx: ' .. what .. ' must be a non-negative integer', 0)
    end
    return n
  end

  -- One JSON operation: its result or error object. A write that changed something gets
  -- one rev, shared by its changes.
  local function run_json_op(op)
    S.changes = {}
    S.method = nil
    local okr, name, fields = pcall(run_op, op)
    if #S.changes > 0 then
      S.rev = S.rev + 1
      local ep = S.method == 'server.flush' and S.epoch or nil
      for _, k in ipairs(S.changes) do
        record(S.rev, k, S.method, ep)
      end
    end
    if not okr then
      return error_json(name)
    end
    if WRITES[name] then
      fields = fields .. ',"rev":' .. rev_text()
    end
    return '{"result":{' .. fields .. '}}'
  end

  local function call_reply(results)
    return '{"rev":' .. rev_text() .. ',"epoch":' .. jstr(epoch_now()) .. ',"results":[' .. concat(results, ',') .. ']}'
  end

  -- dbx_exec now_ms backlog ops_json: a batch (one JSON array, atomic as a whole).
  local function dbx_exec(_, args)
    local now = parse_int_arg(args[1], 'now_ms')
    local backlog = parse_int_arg(args[2], 'backlog')
    begin_call(now, backlog)
    local ok, ops = pcall(decode_json, args[3] or '', true)
    local results = {}
    if not ok or type(ops) ~= 'table' or not ops.arr then
      end_call()
      error('dbx: ops_json must be a JSON array of operations', 0)
    end
    for i, op in ipairs(ops.list) do
      results[i] = run_json_op(op)
    end
    end_call()
    return call_reply(results)
  end

  -- A plain `string.set` (key and value, nothing else: the gateway sends every other
  -- string.set as JSON) without JSON to read: the same effects as the method
  -- 'string.set'. Its result is the bare rev (an integer: the gateway writes
  -- `{"set":true,"rev":n}`), or an error object.
  local function set_plain(key, value)
    local ok, e = pcall(bad, key)
    if not ok then
      return error_json(e)
    end
    if S.any_dl then
      live(key)
      rcall('SET', key, value)
      set_deadline(key, false)
    else
      rcall('SET', key, value)
    end
    S.rev = S.rev + 1
    record(S.rev, key, 'string.set')
    return S.rev
  end

  -- `count` plain string.sets whose keys and values are args[i], args[i + 1], … (the
  -- gateway's `P` form): their results go to out[n + 1 …]; returns the new n.
  --
  -- This is the gateway's commonest write, and Lua runs slowly inside Redis (about a
  -- hundred machine instructions per VM instruction in Debian's build, and a thousand or
  -- more per redis.call), so while no key has a TTL (nothing to expire first, no
  -- deadline to drop) a run takes one MSET for all its pairs (the same effect as the
  -- SETs one after the other) and one `k` field per change, each with its own rev.
  local function set_run(args, i, count, out, n)
    local s = S
    local stop = i + 2 * count - 1
    if s.any_dl == nil then
      -- Without any TTL in the database (common), one EXISTS per call spares a ZSCORE
      -- per key.
      s.any_dl = rcall('EXISTS', K_DEADLINES) == 1
    end
    local slow = s.any_dl or 2 * count > ENTRY_FIELDS
    if not slow then
      -- The gateway refuses every key under the reserved prefix; this guard keeps
      -- DBX's own keys (the exact names: a table lookup, where a prefix test would be
      -- a C call per key) from being overwritten whatever it is sent.
      for j = i, stop, 2 do
        if IS_RESERVED[args[j]] then
          slow = true
          break
        end
      end
    end
    if slow then
      for j = i, stop, 2 do
        n = n + 1
        out[n] = set_plain(args[j], args[j + 1])
      end
      return n
    end
    rcall('MSET', unpack(args, i, stop))
    local rev = s.rev + 1
    record(rev, args[i], 'string.set')
    n = n + 1
    out[n] = rev
    -- the rest: revs one after the other, the same event, so a `k` field each
    local p, pn = s.pend, s.pn
    for j = i + 2, stop, 2 do
      rev = rev + 1
      pn = pn + 2
      p[pn - 1], p[pn] = 'k', args[j]
      n = n + 1
      out[n] = rev
    end
    s.pn, s.prev_rev, s.rev = pn, rev, rev
    return n
  end

  -- dbx_run now_ms backlog op…: the requests of several clients gathered in one gateway
  -- loop turn, each its own operation with its own result. An op is either one JSON op
  -- object (`{"method":…,"params":…}`), or a run of plain `string.set`s: `P`, their
  -- count, then key and value of each. Returns an array: the rev (an integer) and the
  -- epoch after the call, then one element per operation: its result object as JSON
  -- text, or for a plain `string.set` that succeeded its rev as an integer (numbers
  -- formatted by Redis's C code, not by Lua, which is slow at it).
  local function dbx_run(_, args)
    local now = parse_int_arg(args[1], 'now_ms')
    local backlog = parse_int_arg(args[2], 'backlog')
    begin_call(now, backlog)
    local out, n, i, last = { false, false }, 2, 3, #args
    while i <= last do
      local a = args[i]
      if a == 'P' then
        local count = tonumber(args[i + 1])
        if not count or count < 1 or count ~= floor(count) or i + 1 + 2 * count > last then
          error('dbx: P must be followed by a count and that many keys and values', 0)
        end
        n = set_run(args, i + 2, count, out, n)
        i = i + 2 + 2 * count
      else
        local ok, op = pcall(decode_json, a, false)
        n = n + 1
        out[n] = ok and run_json_op(op) or error_json(op)
        i = i + 1
      end
    end
    end_call()
    out[1], out[2] = S.rev, epoch_now()
    return out
  end

  -- Byte order (Rust's str order). Lua's `<` uses strcoll, and Redis sets LC_COLLATE from
  -- its environment, so under e.g. en_US.UTF-8 it would not be byte order.
  local function byte_less(a, b)
    local n = #a < #b and #a or #b
    for i = 1, n do
      local x, y = byte(a, i), byte(b, i)
      if x ~= y then
        return x < y
      end
    end
    return #a < #b
  end

  -- The value of `key` as key.watch shows it (realtime::write_value), or nil if missing.
  local function watch_value(key)
    local t = key_type(key)
    if t == 'string' then
      return '{"type":"string","value":' .. jstr(rcall('GET', key)) .. '}'
    elseif t == 'hash' then
      local flat = rcall('HGETALL', key)
      local idx = {}
      for i = 1, #flat, 2 do
        idx[#idx + 1] = i
      end
      table.sort(idx, function(a, b)
        return byte_less(flat[a], flat[b])
      end)
      local out = {}
      for _, i in ipairs(idx) do
        out[#out + 1] = jstr(flat[i]) .. ':' .. jstr(flat[i + 1])
      end
      return '{"type":"hash","value":{' .. concat(out, ',') .. '}}'
    elseif t == 'set' then
      local m = rcall('SMEMBERS', key)
      table.sort(m, byte_less)
      for i, v in ipairs(m) do
        m[i] = jstr(v)
      end
      return '{"type":"set","value":[' .. concat(m, ',') .. ']}'
    elseif t == 'list' then
      local m = rcall('LRANGE', key, 0, -1)
      for i, v in ipairs(m) do
        m[i] = jstr(v)
      end
      return '{"type":"list","value":[' .. concat(m, ',') .. ']}'
    elseif t == 'zset' then
      local flat = rcall('ZRANGE', key, 0, -1, 'WITHSCORES')
      local out = {}
      for i = 1, #flat, 2 do
        out[#out + 1] = '{"member":' .. jstr(flat[i]) .. ',"score":' .. score_text(tonumber(flat[i + 1])) .. '}'
      end
      return '{"type":"zset","value":[' .. concat(out, ',') .. ']}'
    end
    return nil
  end

  -- dbx_watch_read now_ms keys_json: keys_json is an array of keys, or an object
  -- {"keys":[…],"patterns":[…]} (patterns: every existing key matching one, found with
  -- SCAN — O(keys), as the embedded key.watch walks its whole store).
  local function dbx_watch_read(_, args)
    local now = parse_int_arg(args[1], 'now_ms')
    local ok, spec = pcall(json_decode, args[2] or '')
    if not ok or type(spec) ~= 'table' then
      error('dbx: keys_json must be a JSON array of keys', 0)
    end
    local keys, patterns = {}, {}
    if spec.arr then
      keys = spec.list
    elseif spec.obj then
      keys = (type(spec.map.keys) == 'table' and spec.map.keys.list) or {}
      patterns = (type(spec.map.patterns) == 'table' and spec.map.patterns.list) or {}
    end
    local function due(k)
      local d = rcall('ZSCORE', K_DEADLINES, k)
      return d and tonumber(d) <= now
    end
    local out, seen = {}, {}
    for _, k in ipairs(keys) do
      if type(k) == 'string' and not seen[k] and sub(k, 1, #PREFIX) ~= PREFIX and not due(k) then
        local v = watch_value(k)
        if v then
          out[#out + 1] = jstr(k) .. ':' .. v
          seen[k] = true
        end
      end
    end
    for _, pat in ipairs(patterns) do
      if type(pat) == 'string' then
        local cursor = '0'
        repeat
          local r = rcall('SCAN', cursor, 'MATCH', pat, 'COUNT', 1000)
          cursor = r[1]
          for _, k in ipairs(r[2]) do
            if not seen[k] and sub(k, 1, #PREFIX) ~= PREFIX and not due(k) then
              local v = watch_value(k)
              if v then
                out[#out + 1] = jstr(k) .. ':' .. v
                seen[k] = true
              end
            end
          end
        until cursor == '0'
      end
    end
    local rev = rcall('GET', K_REV) or '0'
    local epoch = rcall('GET', K_EPOCH) or ''
    return '{"rev":' .. rev .. ',"epoch":' .. jstr(epoch) .. ',"values":{' .. concat(out, ',') .. '}}'
  end

  -- dbx_expire_due now_ms limit backlog
  local function dbx_expire_due(_, args)
    local now = parse_int_arg(args[1], 'now_ms')
    local limit = parse_int_arg(args[2], 'limit')
    local backlog = parse_int_arg(args[3], 'backlog')
    begin_call(now, backlog)
    local due = rcall('ZRANGEBYSCORE', K_DEADLINES, '-inf', int(now), 'LIMIT', 0, limit)
    for _, k in ipairs(due) do
      rcall('DEL', k)
      rcall('ZREM', K_DEADLINES, k)
      record_own(k, 'expired')
    end
    end_call()
    return #due
  end

  -- rev, epoch, client keys, library version, and Redis's memory figures (from INFO
  -- memory) for the gateway's server.info.
  local function dbx_info()
    local rev = rcall('GET', K_REV) or '0'
    local epoch = rcall('GET', K_EPOCH) or ''
    local mem = rcall('INFO', 'memory')
    local used = mem:match('used_memory:(%d+)') or '0'
    local max = mem:match('maxmemory:(%d+)') or '0'
    local policy = mem:match('maxmemory_policy:([%w%-]+)') or ''
    return '{"rev":'
      .. rev
      .. ',"epoch":'
      .. jstr(epoch)
      .. ',"keys":'
      .. int(client_keys())
      .. ',"lib":'
      .. jstr(LIB_VERSION)
      .. ',"used_memory":'
      .. used
      .. ',"maxmemory":'
      .. max
      .. ',"maxmemory_policy":'
      .. jstr(policy)
      .. '}'
  end

  -- dbx_init backlog [delivered_rev [delivered_epoch [last_id last_t last_k last_e]]]:
  -- called by a gateway at every (re)connect. Creates the epoch and rev when missing.
  -- Starts a new epoch when the history is behind what was already seen: the rev below
  -- the stream's last entry (XADD would fail), or below `delivered_rev`, the last rev
  -- this gateway delivered (a failover to a replica that had not received everything, a
  -- Redis restarted without its data); or when the last entry the gateway read
  -- (`last_id` with fields t, k, e) is within the stream's reach but not there as it was
  -- read (lost in a failover, and its rev since reused by another gateway's writes: the
  -- revs alone cannot see that). The rev is then raised past everything (revs never go
  -- back) and an `epoch` change with the new epoch (field ep) is recorded, so every
  -- gateway following the stream switches. (`delivered_epoch` is accepted for the
  -- record; the rule does not need it.)
  local function dbx_init(_, args)
    local backlog = parse_int_arg(args[1] or '0', 'backlog')
    local delivered = args[2] and parse_int_arg(args[2], 'delivered_rev') or 0
    local t = rcall('TIME')
    begin_call(tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000), backlog)
    local had_rev = rcall('EXISTS', K_REV) == 1
    local epoch = rcall('GET', K_EPOCH)
    local last = rcall('XREVRANGE', K_CHANGES, '+', '-', 'COUNT', 1)
    local last_rev = 0
    if last[1] then
      last_rev = tonumber((last[1][1]):match('^(%d+)')) or 0
    end
    -- Whatever epoch the caller delivered it in: a rev below it means the history it
    -- delivered is not here (also: Redis restarted empty), and raising the rev past it
    -- keeps every gateway's stream position valid (their next entry is the `epoch` one).
    local behind = S.rev < last_rev or S.rev < delivered
    local seen_id = args[4]
    if not behind and seen_id and find(seen_id, '^%d+%-%d+$') then
      local first = rcall('XRANGE', K_CHANGES, '-', '+', 'COUNT', 1)[1]
      local first_rev = first and tonumber((first[1]):match('^(%d+)')) or nil
      local seen_rev = tonumber(seen_id:match('^(%d+)'))
      -- Within reach: not older than the oldest entry kept (trimmed is not lost).
      if first_rev and seen_rev >= first_rev then
        local e = rcall('XRANGE', K_CHANGES, seen_id, seen_id)[1]
        local same = false
        if e then
          local f, m = e[2], {}
          for i = 1, #f, 2 do
            -- the last change's key: `k` or `m` (see `record`)
            m[f[i] == 'm' and 'k' or f[i]] = f[i + 1]
          end
          same = m.t == args[5] and m.k == args[6] and m.e == args[7]
        end
        behind = not same
      end
    end
    if behind then
      S.rev = math.max(S.rev, last_rev, delivered) + 1
      S.epoch = new_epoch(epoch)
      record(S.rev, '', 'epoch', S.epoch)
      epoch = S.epoch
    elseif not had_rev then
      S.rev0 = -1 -- write rev 0
    end
    if not epoch then
      epoch = new_epoch(nil)
    end
    end_call()
    if rcall('GET', K_LIB) ~= LIB_VERSION then
      rcall('SET', K_LIB, LIB_VERSION)
    end
    if backlog > 0 then
      rcall('XTRIM', K_CHANGES, 'MAXLEN', '~', backlog)
    end
    return '{"rev":' .. int(S.rev) .. ',"epoch":' .. jstr(epoch) .. '}'
  end

  -- Every writing function through this: when an error escapes half way (a bug, or a
  -- command Redis refused), what was done is still recorded (its changes in the stream,
  -- the rev), never left out of the history, before the error goes to the gateway.
  local function guarded(fn)
    return function(keys, args)
      S = nil
      local ok, r = pcall(fn, keys, args)
      if not ok then
        if S then
          end_call()
        end
        error(r, 0)
      end
      return r
    end
  end

  return {
    exec = guarded(dbx_exec),
    run = guarded(dbx_run),
    watch_read = dbx_watch_read,
    expire_due = guarded(dbx_expire_due),
    info = dbx_info,
    init = guarded(dbx_init),
  }
end

local lib

local function entry(name)
  return function(keys, args)
    if not lib then
      lib = build()
    end
    return lib[name](keys, args)
  end
end

redis.register_function({ function_name = 'dbx_exec', callback = entry('exec') })
-- The same function for requests none of whose operations can grow memory (reads and
-- deletes): Redis runs it above maxmemory, as the embedded store never refuses those.
redis.register_function({ function_name = 'dbx_exec_allow_oom', callback = entry('exec'), flags = { 'allow-oom' } })
redis.register_function({ function_name = 'dbx_run', callback = entry('run') })
redis.register_function({ function_name = 'dbx_run_allow_oom', callback = entry('run'), flags = { 'allow-oom' } })
redis.register_function({ function_name = 'dbx_watch_read', callback = entry('watch_read'), flags = { 'no-writes' } })
redis.register_function({ function_name = 'dbx_expire_due', callback = entry('expire_due'), flags = { 'allow-oom' } })
redis.register_function({ function_name = 'dbx_info', callback = entry('info'), flags = { 'no-writes' } })
redis.register_function({ function_name = 'dbx_init', callback = entry('init'), flags = { 'allow-oom' } })
