-- Training checkpoint -> inference checkpoint: keeps the model weights and drops what only
-- training needs (optimizer state, learning-rate scheduler, dataloader position, and every
-- bytes entry not asked for). By default each kept tensor is whole on every rank, so with
-- --world-size 1 the result is a consolidated single-file checkpoint:
--
--   bazel run //scripts:convert -- TRAIN_DIR EXPORT_DIR \
--       --planner planners/examples/inference_export.lua --world-size 1
--   bazel run //scripts:convert -- TRAIN_DIR EXPORT_DIR \
--       --planner planners/examples/inference_export.lua --world-size 8 \
--       --set shard=true --set strip_prefix=model. --set keep_bytes=config,tokenizer
--
-- A key is dropped when it is, or lies under (the name followed by a dot), one of the `drop`
-- names: "optim" drops "optim.state.net1.weight.exp_avg" and "optim" itself, not "optimus.w".
-- Values and dtypes are copied as saved (a conversion changes layouts, never values): cast to
-- bf16 when loading, or in the exporting trainer.
-- The convert command prints each dropped key as "dropped: <key>".
--
-- Options (--set name=value):
--   drop          comma-separated names dropped with everything under them
--                 (default "optim,optimizer,lr_scheduler,dataloader")
--   keep_bytes    comma-separated bytes entries to keep, even under a `drop` name (default "":
--                 drop every one); naming one the checkpoint lacks is an error
--   shard         "false" (default): Replicate(); "true": Shard(0) (0-d tensors replicated)
--   strip_prefix  removed from the start of every kept key (default "", e.g. "model.")
local P = {}

P.options = {
  drop = "optim,optimizer,lr_scheduler,dataloader",
  keep_bytes = "",
  shard = "false",
  strip_prefix = "",
}

local function set_of(list)
  local s = {}
  for part in string.gmatch(list, "[^,]+") do
    part = part:match("^%s*(.-)%s*$")
    if part ~= "" then s[#s + 1] = part end
  end
  return s
end

-- Whether `key` is one of `names` or lies under one of them.
local function under(key, names)
  for _, n in ipairs(names) do
    if key == n or key:sub(1, #n + 1) == n .. "." then return true end
  end
  return false
end

function P.convert(ctx, md)
  local o = ctx.options
  if o.shard ~= "true" and o.shard ~= "false" then
    error("option shard must be true or false, got '" .. o.shard .. "'")
  end
  local drop = set_of(o.drop)
  local keep_bytes = {}
  for _, k in ipairs(set_of(o.keep_bytes)) do
    if md.bytes[k] == nil then error("keep_bytes names '" .. k .. "', which the checkpoint has no bytes entry for") end
    keep_bytes[k] = true
  end
  local prefix = o.strip_prefix
  local function target(k)
    if prefix ~= "" and k:sub(1, #prefix) == prefix then return k:sub(#prefix + 1) end
    return k
  end

  local entries = {}
  for _, k in ipairs(dcpp.sorted_keys(md.tensors)) do
    if not under(k, drop) then
      local layout = "Replicate()"
      if o.shard == "true" and #md.tensors[k].shape > 0 then layout = "Shard(0)" end
      entries[#entries + 1] = {key = target(k), source = k, layout = layout}
    end
  end
  for _, k in ipairs(dcpp.sorted_keys(md.bytes)) do
    if keep_bytes[k] then entries[#entries + 1] = {key = target(k), source = k} end
  end
  return entries
end

return P
