-- Any layout -> FSDP: every tensor Shard(0) over ctx.world_size ranks (0-d tensors
-- replicated), keys and bytes entries unchanged. Embedded in the binary; e.g. turn a TP
-- checkpoint back into FSDP over 3 ranks:
--   bazel run //scripts:convert -- TP_DIR FSDP_DIR --planner planners/to_fsdp.lua --world-size 3
local P = {}

P.options = {
  dim = "0",  -- the dimension to shard (negative counts from the last)
}

function P.convert(ctx, md)
  local dim = tonumber(ctx.options.dim)
  if dim == nil then error("option dim must be an integer, got '" .. ctx.options.dim .. "'") end
  local keys = dcpp.sorted_keys(md.tensors)
  local entries = {}
  for _, k in ipairs(keys) do
    local ndim = #md.tensors[k].shape
    local layout = "Replicate()"
    if ndim > 0 and (dim >= 0 and dim < ndim or dim < 0 and -dim <= ndim) then
      layout = "Shard(" .. dim .. ")"
    end
    entries[#entries + 1] = {key = k, source = k, layout = layout}
  end
  local blobs = dcpp.sorted_keys(md.bytes)
  for _, k in ipairs(blobs) do entries[#entries + 1] = {key = k, source = k} end
  return entries
end

return P
