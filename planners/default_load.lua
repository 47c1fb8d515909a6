-- dcpp's default load planner. Embedded in the binary; replace it with LoadOptions::planner.
--
-- Contract (README "Planners"):
--   P.load_key(ctx, fqn, md) -> key           which saved key feeds a target key
--   P.load_local(ctx, targets, md) -> reads, missing
--   P.load_broadcast(ctx, wanted, md) -> groups   (optional) read once, broadcast
-- A target is {fqn, kind = "tensor"|"bytes", dtype, shape, offsets, sizes}. `md.tensors[key]`
-- is {dtype, shape, chunks = {{offsets, sizes}, ...}} and `md.bytes[key]` is {length}.
-- A read is {target = i, key = k, chunk = j} (chunk omitted for bytes): the engine copies the
-- overlap of saved chunk j of key k into target i. `missing` lists targets with no source.
--
-- load_broadcast runs on the coordinator (rank 0) only, when there are several ranks, after
-- every rank's load_local. `wanted[r]` (r = 1..world_size) lists rank r-1's tensor targets that
-- load: {fqn, key (the saved key load_local reads), dtype, shape, offsets, sizes, nbytes}. A
-- group {fqn, offsets, sizes, root} (root a 0-based rank) makes `root` alone read that region
-- from storage and broadcast it to every rank through the Comm; every rank must have a target
-- chunk of `fqn` with exactly that box (same dtype and saved key on all), and no group may
-- appear twice, or the load fails naming the group. ctx.comm_device is "cpu" (gloo) or "cuda"
-- (NCCL). This default proposes every region wanted identically by all ranks, roots balanced
-- by bytes, when ctx.options.broadcast is "on", or is "auto" (the default) and the Comm runs
-- on CUDA; "off" turns it off.
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

function P.load_broadcast(ctx, wanted, md)
  local mode = ctx.options.broadcast or "auto"
  if mode == "off" or (mode == "auto" and ctx.comm_device ~= "cuda") then return {} end
  if mode ~= "on" and mode ~= "auto" then
    error("option broadcast must be on, off or auto, not '" .. tostring(mode) .. "'")
  end
  local world = #wanted
  -- Regions of rank 1 (by fqn and box), kept while every later rank wants them alike.
  local regions, order = {}, {}
  for _, t in ipairs(wanted[1]) do
    local id = t.fqn .. "\0" .. dcpp.box_key(t.offsets, t.sizes)
    if regions[id] == nil and t.nbytes > 0 then
      regions[id] = {t = t, ranks = 1}
      order[#order + 1] = id
    end
  end
  for r = 2, world do
    for _, t in ipairs(wanted[r]) do
      local g = regions[t.fqn .. "\0" .. dcpp.box_key(t.offsets, t.sizes)]
      if g ~= nil and g.ranks == r - 1 and g.t.dtype == t.dtype and g.t.key == t.key then
        g.ranks = r
      end
    end
  end
  local groups = {}
  for i, id in ipairs(order) do
    local g = regions[id]
    if g.ranks == world then
      groups[#groups + 1] = {fqn = g.t.fqn, offsets = g.t.offsets, sizes = g.t.sizes,
                             nbytes = g.t.nbytes, pos = i}
    end
  end
  -- Roots: largest first to the rank with the fewest bytes so far (ties: lowest rank), so
  -- equal regions go round-robin.
  local by_size = {}
  for i, g in ipairs(groups) do by_size[i] = g end
  table.sort(by_size, function(a, b)
    if a.nbytes ~= b.nbytes then return a.nbytes > b.nbytes end
    return a.pos < b.pos
  end)
  local load = {}
  for r = 1, world do load[r] = 0 end
  for _, g in ipairs(by_size) do
    local best = 1
    for r = 2, world do
      if load[r] < load[best] then best = r end
    end
    g.root = best - 1
    load[best] = load[best] + g.nbytes
  end
  local out = {}
  for i, g in ipairs(groups) do
    out[i] = {fqn = g.fqn, offsets = g.offsets, sizes = g.sizes, root = g.root}
  end
  return out
end

return P
