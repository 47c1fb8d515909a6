-- dcpp's default load planner. Embedded in the binary; replace it with LoadOptions::planner.
--
-- Contract (docs/planners.md):
--   P.load_key(ctx, fqn, md) -> key           which saved key feeds a target key
--   P.load_local(ctx, targets, md) -> reads, missing
-- A target is {fqn, kind = "tensor"|"bytes", dtype, shape, offsets, sizes}. `md.tensors[key]`
-- is {dtype, shape, chunks = {{offsets, sizes}, ...}} and `md.bytes[key]` is {length}.
-- A read is {target = i, key = k, chunk = j} (chunk omitted for bytes): the engine copies the
-- overlap of saved chunk j of key k into target i. `missing` lists targets with no source.
local P = {}

function P.load_key(ctx, fqn, md)
  return fqn
end

function P.load_local(ctx, targets, md)
  local reads, missing = {}, {}
  for i, t in ipairs(targets) do
    local key = P.load_key(ctx, t.fqn, md)
    if t.kind == "bytes" then
      if md.bytes[key] ~= nil then
        reads[#reads + 1] = {target = i, key = key}
      else
        missing[#missing + 1] = i
      end
    else
      local m = md.tensors[key]
      if m == nil then
        missing[#missing + 1] = i
      else
        for j, c in ipairs(m.chunks) do
          if dcpp.overlap(t.offsets, t.sizes, c.offsets, c.sizes) then
            reads[#reads + 1] = {target = i, key = key, chunk = j}
          end
        end
      end
    end
  end
  return reads, missing
end

return P
