-- A placement policy through save_global: one file per key and writing rank, instead of the
-- default's one file per rank (per writer thread). Every chunk of key K written by rank R goes
-- to "__R_N.distcp", where N (from ctx.first_file_index up) numbers K among the keys in sorted
-- order, so "__*_N.distcp" are key K's files and nothing else. The keys and layouts are those
-- of planners/to_fsdp.lua (kept names, Shard(0) or replicated), so it works on any checkpoint:
--
--   bazel run //scripts:convert -- SRC DST --planner planners/examples/file_per_key.lua \
--       --world-size 4 [--set layout=replicate] [--set writer=first]
--
-- A chunk that several ranks hold (a replicated tensor) is still written once: the engine
-- records one location per chunk and refuses a plan that writes one twice, so "every rank's
-- files hold everything it needs" cannot be expressed. `writer` picks which holder writes it.
--
-- Trade-offs, against planners/default_save.lua:
--   + Per-tensor access: a reader that wants a few tensors (an evaluation of one layer, a
--     serving process that loads its experts lazily) opens only their files; a key's files can
--     be copied, cached or deleted on their own.
--   - Many files: up to keys x ranks (a 291-tensor Llama over 64 ranks, FSDP: ~18,600), each an
--     open/close on save and load, and a metadata operation (or an object-store request) on
--     filesystems where those are the bottleneck. The default writes ctx.thread_count files a
--     rank.
--   writer=hash (default): a replicated key is written by the holder chosen by a hash of its
--     name, so replicated keys spread over the ranks and the same key lands on the same rank
--     in every save (stable for incremental or content-addressed storage); balanced by count,
--     not bytes, so one rank may draw the embedding and another a norm vector. The default
--     balances bytes exactly (largest chunk first to the least-loaded holder).
--   writer=first: the lowest holding rank writes it, i.e. rank 0 writes every replicated
--     tensor: predictable (rank 0's files hold all replicated state) but rank 0 writes the
--     most and finishes last.
--
-- Options (--set name=value):
--   layout  "fsdp" (default: every tensor Shard(0), 0-d ones replicated) or "replicate"
--   writer  "hash" (default) or "first"
local P = {}

P.options = {
  layout = "fsdp",
  writer = "hash",
}

function P.convert(ctx, md)
  local mode = ctx.options.layout
  if mode ~= "fsdp" and mode ~= "replicate" then
    error("option layout must be fsdp or replicate, got '" .. mode .. "'")
  end
  local entries = {}
  for _, k in ipairs(dcpp.sorted_keys(md.tensors)) do
    local layout = "Replicate()"
    if mode == "fsdp" and #md.tensors[k].shape > 0 then layout = "Shard(0)" end
    entries[#entries + 1] = {key = k, source = k, layout = layout}
  end
  for _, k in ipairs(dcpp.sorted_keys(md.bytes)) do entries[#entries + 1] = {key = k, source = k} end
  return entries
end

-- A small deterministic string hash (31-based, kept below 2^31 so doubles stay exact).
local function hash(s)
  local h = 0
  for i = 1, #s do h = (h * 31 + s:byte(i)) % 2147483647 end
  return h
end

function P.save_global(ctx, plans)
  local writer = ctx.options.writer
  if writer ~= "hash" and writer ~= "first" then
    error("option writer must be hash or first, got '" .. writer .. "'")
  end
  -- Every distinct chunk (key and box) with the ranks that hold it, in rank order.
  local holders, order, fqns = {}, {}, {}
  for r = 1, #plans do
    for _, it in ipairs(plans[r]) do
      local chunk = it.fqn .. "|" .. dcpp.box_key(it.offsets, it.sizes)
      if holders[chunk] == nil then
        holders[chunk] = {}
        order[#order + 1] = chunk
      end
      local h = holders[chunk]
      h[#h + 1] = {rank = r, item = it}
      fqns[it.fqn] = true
    end
  end
  -- File number of each key: its position among the sorted keys.
  local number = {}
  for i, k in ipairs(dcpp.sorted_keys(fqns)) do number[k] = ctx.first_file_index + i - 1 end

  local out = {}
  for r = 1, #plans do out[r] = {} end
  for _, chunk in ipairs(order) do
    local h = holders[chunk]
    local pick = h[1]
    if writer == "hash" then pick = h[hash(pick.item.fqn) % #h + 1] end
    local r, it = pick.rank, pick.item
    it.file = string.format("__%d_%d.distcp", r - 1, number[it.fqn])
    out[r][#out[r] + 1] = it
  end
  for r = 1, #plans do
    table.sort(out[r], function(a, b) return a.index < b.index end)
  end
  return out, {["file_per_key.writer"] = writer}
end

return P
