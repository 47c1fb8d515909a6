-- FSDP -> tensor parallel: the target layout of every key of an FSDP (or any) checkpoint when
-- it is converted to TP over ctx.world_size ranks. Embedded in the binary; run it with
--   bazel run //scripts:convert -- SRC DST --planner planners/fsdp_to_tp.lua --world-size 2
-- and copy it to start your own (README: "Write your own planner").
--
-- The plan follows PyTorch's parallelize_module styles:
--   column-wise  (ColwiseParallel):  weight Shard(0), bias Shard(0)
--   row-wise     (RowwiseParallel):  weight Shard(1), bias Replicate()
--   anything else (embeddings, norms, scalars, unmatched modules): Replicate()
-- Modules are matched by patterns on their path (the key without its last component, e.g.
-- "layers.3.attention.wq" for "layers.3.attention.wq.weight"). A pattern matches the whole
-- path or a tail of it starting at a dot; `*` stands for one path component and `**` for
-- any number of them, so "attention.wq" and "layers.*.attention.wq" both match
-- "layers.3.attention.wq", and "optim.**" matches every optimizer key.
--
-- Keys are renamed before matching: wrapper components are removed (FSDP1's
-- "_fsdp_wrapped_module.", activation checkpointing's "_checkpoint_wrapped_module.",
-- torch.compile's "_orig_mod."; DDP's "module." at the start), then `rename` rules apply.
-- Optimizer state ("optim.state.<param>.<name>") follows its parameter's layout when it has
-- the parameter's shape (exp_avg, exp_avg_sq, momentum_buffer) and is replicated otherwise
-- (step). The parameter is looked up as "<param>" and under each of `param_prefixes`, so
-- PyTorch's usual nestings match: dcp.save({"model": model_sd, "optim": optim_sd}) names the
-- parameter "model.<param>" and its state "optim.state.<param>.exp_avg"; an optimizer dict
-- saved at the top level gives "state.<param>.exp_avg". A key under an optimizer prefix whose
-- parameter is not in the checkpoint is placed like any other key. Bytes entries are copied
-- as they are.
local P = {}

-- Every option can be changed with --set name=value (comma-separated lists).
P.options = {
  colwise = "net1,attention.wq,attention.wk,attention.wv,feed_forward.w1,feed_forward.w3,output",
  rowwise = "net2,attention.wo,feed_forward.w2",
  strip = "_fsdp_wrapped_module.,_checkpoint_wrapped_module.,_orig_mod.",
  strip_leading = "module.",
  -- "from=>to" Lua pattern substitutions applied to the renamed key, separated by ';'
  -- (e.g. "^model%.=>" drops a leading "model.").
  rename = "",
  -- keys to leave out (patterns as for colwise, matched against the whole renamed key,
  -- e.g. "optim.**")
  drop = "",
  -- where optimizer state lives (the first that a key starts with counts)
  optim_prefixes = "optim.state.,optimizer.state.,state.",
  -- where the parameters of that state may live besides the top level
  param_prefixes = "model.",
}

-- Options are split once per distinct string (every key consults the same few lists); the
-- lists returned are shared, so callers must not change them.
local split_cache = {}
local function split(s, sep)
  local id = sep .. "\0" .. s
  local out = split_cache[id]
  if out ~= nil then return out end
  out = {}
  for part in string.gmatch(s, "[^" .. sep .. "]+") do
    part = part:match("^%s*(.-)%s*$")
    if part ~= "" then out[#out + 1] = part end
  end
  split_cache[id] = out
  return out
end

-- `s` with Lua's magic characters escaped, for a literal match.
local escape_cache = {}
local function escape(s)
  local e = escape_cache[s]
  if e == nil then
    e = s:gsub("[%^%$%(%)%%%.%[%]%+%-%?%*]", "%%%0")
    escape_cache[s] = e
  end
  return e
end

-- A dotted pattern ("layers.*.attention.wq") as a Lua pattern anchored at a dot or the start.
-- `**` stands for any number (one or more) of components.
local function compile(pattern)
  local lua = pattern:gsub("[%^%$%(%)%%%.%[%]%+%-%?]", "%%%0")
  lua = lua:gsub("%*%*", "\1"):gsub("%*", "[^.]+"):gsub("\1", ".+")
  return {"^" .. lua .. "$", "%." .. lua .. "$"}
end

local function matcher(list)
  local compiled = {}
  for _, p in ipairs(split(list, ",")) do compiled[#compiled + 1] = compile(p) end
  local seen = {}  -- path -> result (optimizer states look up their parameter's path again)
  return function(path)
    local hit = seen[path]
    if hit ~= nil then return hit end
    hit = false
    for _, c in ipairs(compiled) do
      if path:find(c[1]) or path:find(c[2]) then
        hit = true
        break
      end
    end
    seen[path] = hit
    return hit
  end
end

local function strip_components(key, components, leading_only)
  for _, c in ipairs(split(components, ",")) do
    if leading_only then
      if key:sub(1, #c) == c then key = key:sub(#c + 1) end
    else
      if key:find(c, 1, true) then  -- (a plain search first: most keys hold none of them)
        local plain = escape(c)
        key = key:gsub("^" .. plain, ""):gsub("%." .. plain, ".")
      end
    end
  end
  return key
end

-- The optimizer-state prefix `key` starts with, or nil.
local function optim_prefix(ctx, key)
  for _, prefix in ipairs(split(ctx.options.optim_prefixes, ",")) do
    if key:sub(1, #prefix) == prefix then return prefix end
  end
  return nil
end

-- The target name of saved key `key` (for optimizer state, the parameter part is renamed).
function P.rename(ctx, key)
  local prefix = optim_prefix(ctx, key) or ""
  key = key:sub(#prefix + 1)
  key = strip_components(key, ctx.options.strip_leading, true)
  key = strip_components(key, ctx.options.strip, false)
  for _, rule in ipairs(split(ctx.options.rename, ";")) do
    local from, to = rule:match("^(.-)=>(.*)$")
    if from == nil then error("rename rule '" .. rule .. "' is not of the form from=>to") end
    key = key:gsub(from, to)
  end
  return prefix .. key
end

-- The placement of parameter `key` (renamed) of `ndim` dimensions.
function P.param_layout(ctx, key, ndim, is_colwise, is_rowwise)
  local path, name = key:match("^(.*)%.([^.]+)$")
  if path == nil then return "Replicate()" end
  if is_colwise(path) and ndim >= 1 then return "Shard(0)" end
  if is_rowwise(path) then
    if name == "bias" or ndim < 2 then return "Replicate()" end
    return "Shard(1)"
  end
  return "Replicate()"
end

-- The renamed key of the parameter that optimizer state "<param>.<name>" (its key without
-- the optimizer prefix) belongs to: "<param>" itself or "<param>" under one of
-- `param_prefixes`, whichever `params` (tensors by renamed key) holds first; nil if none.
function P.find_param(ctx, state, params)
  local param = state:match("^(.*)%.[^.]+$")
  if param == nil then return nil end
  if params[param] ~= nil then return param end
  for _, prefix in ipairs(split(ctx.options.param_prefixes, ",")) do
    if params[prefix .. param] ~= nil then return prefix .. param end
  end
  return nil
end

function P.convert(ctx, md)
  local is_colwise, is_rowwise = matcher(ctx.options.colwise), matcher(ctx.options.rowwise)
  local dropped = matcher(ctx.options.drop)

  -- Saved keys in a stable order: tensors then bytes, each sorted.
  local keys = dcpp.sorted_keys(md.tensors)
  local blobs = dcpp.sorted_keys(md.bytes)

  -- Parameters by renamed key, so optimizer state can find its parameter's shape.
  local params, renamed = {}, {}
  for i, k in ipairs(keys) do
    renamed[i] = P.rename(ctx, k)
    params[renamed[i]] = md.tensors[k]
  end

  local entries = {}
  for i, k in ipairs(keys) do
    local t = md.tensors[k]
    local key = renamed[i]
    if not dropped(key) then
      local layout
      local prefix = optim_prefix(ctx, key)
      local param = prefix and P.find_param(ctx, key:sub(#prefix + 1), params)
      if param ~= nil then
        -- <prefix><param>.<name>: the parameter's layout if the shapes agree
        if table.concat(params[param].shape, ",") == table.concat(t.shape, ",") then
          layout = P.param_layout(ctx, param, #t.shape, is_colwise, is_rowwise)
        else
          layout = "Replicate()"
        end
      end
      layout = layout or P.param_layout(ctx, key, #t.shape, is_colwise, is_rowwise)
      entries[#entries + 1] = {key = key, source = k, layout = layout}
    end
  end
  for _, k in ipairs(blobs) do
    local key = P.rename(ctx, k)
    if not dropped(key) then entries[#entries + 1] = {key = key, source = k} end
  end
  return entries
end

return P
