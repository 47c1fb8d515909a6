-- dcpp's default save planner. Embedded in the binary; replace it with SaveOptions::planner
-- (or --planner on the command line) to change any of these decisions.
--
-- Contract (docs/planners.md):
--   P.save_local(ctx, items) -> items        each rank: keep, drop or rename its items
--   P.save_global(ctx, plans) -> plans, data coordinator: choose one writer for every chunk
--                                            several ranks hold (dedup) and a file for each
-- An item is {fqn, kind = "tensor"|"bytes", dtype, shape, offsets, sizes, nbytes, index};
-- `index` ties it to the rank's state dict and must be kept. The engine assigns byte offsets
-- inside each file. `data` (optional) is a table of strings recorded in the metadata.
local P = {}

function P.save_local(ctx, items)
  return items
end

-- Writers balanced by bytes: every distinct (fqn, box) goes, largest first, to the holder
-- that has been given the fewest bytes so far (ties to the lowest rank). Each rank spreads its
-- items over ctx.thread_count files the same way, then keeps its state-dict order in them.
function P.save_global(ctx, plans)
  local holders, order = {}, {}
  for r = 1, #plans do
    for _, it in ipairs(plans[r]) do
      local key = it.fqn .. "|" .. dcpp.box_key(it.offsets, it.sizes)
      local h = holders[key]
      if h == nil then
        h = {}
        holders[key] = h
        order[#order + 1] = {key = key, nbytes = it.nbytes}
      end
      h[#h + 1] = {rank = r, item = it}
    end
  end
  table.sort(order, function(a, b)
    if a.nbytes ~= b.nbytes then return a.nbytes > b.nbytes end
    return a.key < b.key
  end)

  local rank_bytes, file_bytes, out = {}, {}, {}
  local nfiles = math.max(1, ctx.thread_count)
  for r = 1, #plans do
    rank_bytes[r], out[r], file_bytes[r] = 0, {}, {}
    for f = 1, nfiles do file_bytes[r][f] = 0 end
  end
  for _, o in ipairs(order) do
    local h = holders[o.key]
    local best = h[1]
    for i = 2, #h do
      if rank_bytes[h[i].rank] < rank_bytes[best.rank] then best = h[i] end
    end
    local r, it = best.rank, best.item
    rank_bytes[r] = rank_bytes[r] + it.nbytes
    local f = 1
    for g = 2, nfiles do
      if file_bytes[r][g] < file_bytes[r][f] then f = g end
    end
    file_bytes[r][f] = file_bytes[r][f] + it.nbytes
    it.file = string.format("__%d_%d.distcp", r - 1, ctx.first_file_index + f - 1)
    out[r][#out[r] + 1] = it
  end
  for r = 1, #plans do
    table.sort(out[r], function(a, b) return a.index < b.index end)
  end
  return out
end

return P
