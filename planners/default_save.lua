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

-- `items` in the order of their `index` (numbers sorted without a comparator function; a
-- repeated index, which the engine refuses later, falls back to a plain sort).
local function by_index(items)
  local at, indices = {}, {}
  for i, it in ipairs(items) do
    if type(it.index) ~= "number" or at[it.index] ~= nil then
      table.sort(items, function(a, b) return a.index < b.index end)
      return items
    end
    at[it.index] = it
    indices[i] = it.index
  end
  table.sort(indices)
  local out = {}
  for i, x in ipairs(indices) do out[i] = at[x] end
  return out
end

-- Writers balanced by bytes: every distinct (fqn, box) goes, largest first, to the holder
-- that has been given the fewest bytes so far (ties to the lowest rank). Each rank spreads its
-- items over ctx.thread_count files the same way, then keeps its state-dict order in them.
function P.save_global(ctx, plans)
  -- Distinct chunks grouped by size: sizes sorted largest first, keys within a size sorted
  -- with Lua's own string order (no comparator function, so no Lua call per comparison:
  -- with many small tensors the sort is most of this step).
  local holders, by_size, sizes = {}, {}, {}
  for r = 1, #plans do
    for _, it in ipairs(plans[r]) do
      local key = it.fqn .. "|" .. dcpp.box_key(it.offsets, it.sizes)
      local h = holders[key]
      if h == nil then
        h = {}
        holders[key] = h
        local keys = by_size[it.nbytes]
        if keys == nil then
          keys = {}
          by_size[it.nbytes] = keys
          sizes[#sizes + 1] = it.nbytes
        end
        keys[#keys + 1] = key
      end
      h[#h + 1] = {rank = r, item = it}
    end
  end
  table.sort(sizes, function(a, b) return a > b end)
  local order = {}
  for _, n in ipairs(sizes) do
    local keys = by_size[n]
    table.sort(keys)
    for _, key in ipairs(keys) do order[#order + 1] = {key = key, nbytes = n} end
  end

  local rank_bytes, file_bytes, file_names, out = {}, {}, {}, {}
  local nfiles = math.max(1, ctx.thread_count)
  for r = 1, #plans do
    rank_bytes[r], out[r], file_bytes[r], file_names[r] = 0, {}, {}, {}
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
    local names = file_names[r]
    if names[f] == nil then names[f] = string.format("__%d_%d.distcp", r - 1, ctx.first_file_index + f - 1) end
    it.file = names[f]
    out[r][#out[r] + 1] = it
  end
  for r = 1, #plans do out[r] = by_index(out[r]) end
  return out
end

return P
