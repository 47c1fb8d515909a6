-- Hugging Face Llama <-> torchtitan: renames every key between the two namings and lays the
-- result out for tensor parallelism, so an HF checkpoint (already in dcpp's format) becomes a
-- TP checkpoint that torchtitan-style modules load directly, in one conversion.
--
--   bazel run //scripts:convert -- HF_DIR TITAN_DIR \
--       --planner planners/examples/hf_to_torchtitan.lua --world-size 4
--   bazel run //scripts:convert -- TITAN_DIR HF_DIR \
--       --planner planners/examples/hf_to_torchtitan.lua --world-size 1 \
--       --set direction=titan_to_hf --set layout=replicate
--
-- Names (N is the layer number; `.weight` and `.bias` alike):
--   model.embed_tokens                    <-> tok_embeddings
--   model.layers.N.self_attn.q_proj/k_proj/v_proj/o_proj
--                                         <-> layers.N.attention.wq/wk/wv/wo
--   model.layers.N.mlp.gate_proj/up_proj/down_proj
--                                         <-> layers.N.feed_forward.w1/w3/w2
--   model.layers.N.input_layernorm        <-> layers.N.attention_norm
--   model.layers.N.post_attention_layernorm <-> layers.N.ffn_norm
--   model.norm                            <-> norm
--   lm_head                               <-> output
-- Layout (torchtitan's TP plan): column-wise q, k, v, gate, up and output get Shard(0) (weight
-- and bias); row-wise o and down get weight Shard(1), bias replicated; norms and the embedding
-- are replicated. Keys it does not know (e.g. rotary_emb.inv_freq) are kept, unrenamed and
-- replicated, unless strict=true, which stops at the first one and names it. Bytes entries are
-- copied unchanged.
--
-- Only names and layouts change, never values. Hugging Face stores the rows of q_proj/k_proj
-- permuted for its rotary embedding (transformers' convert_llama_weights_to_hf permutes Meta's
-- weights), while torchtitan keeps Meta's order; a full HF <-> torchtitan converter also
-- permutes those rows, which a conversion planner cannot do.
--
-- Options (--set name=value):
--   direction  "hf_to_titan" (default) or "titan_to_hf"
--   layout     "tp" (default, above), "replicate" (every key whole on every rank; with
--              --world-size 1 a consolidated checkpoint) or "fsdp" (every tensor Shard(0))
--   strict     "false" (default) or "true": an unknown tensor key is an error
local P = {}

P.options = {
  direction = "hf_to_titan",
  layout = "tp",
  strict = "false",
}

-- Per-layer modules: {HF path, torchtitan path, TP style}.
local LAYER = {
  {"self_attn.q_proj", "attention.wq", "colwise"},
  {"self_attn.k_proj", "attention.wk", "colwise"},
  {"self_attn.v_proj", "attention.wv", "colwise"},
  {"self_attn.o_proj", "attention.wo", "rowwise"},
  {"mlp.gate_proj", "feed_forward.w1", "colwise"},
  {"mlp.up_proj", "feed_forward.w3", "colwise"},
  {"mlp.down_proj", "feed_forward.w2", "rowwise"},
  {"input_layernorm", "attention_norm", "replicate"},
  {"post_attention_layernorm", "ffn_norm", "replicate"},
}
-- Modules outside the layers.
local TOP = {
  {"model.embed_tokens", "tok_embeddings", "replicate"},
  {"model.norm", "norm", "replicate"},
  {"lm_head", "output", "colwise"},
}
-- Where the layers live in each naming (a Lua pattern capturing N and the rest).
local LAYERS = {hf = {"^model%.layers%.(%d+)%.(.+)$", "model.layers.%s.%s"},
                titan = {"^layers%.(%d+)%.(.+)$", "layers.%s.%s"}}

-- module path -> {target path, style}, for one direction.
local function table_for(from, to)
  local col = {hf = 1, titan = 2}
  local layer, top = {}, {}
  for _, m in ipairs(LAYER) do layer[m[col[from]]] = {m[col[to]], m[3]} end
  for _, m in ipairs(TOP) do top[m[col[from]]] = {m[col[to]], m[3]} end
  return layer, top
end

-- The target name and TP style of saved key `key`, or nil if the key is not a known one.
function P.rename(ctx, key)
  local from, to = "hf", "titan"
  if ctx.options.direction == "titan_to_hf" then from, to = "titan", "hf" end
  local layer, top = table_for(from, to)
  local path, param = key:match("^(.*)%.([^.]+)$")
  if path == nil then return nil end
  local n, rest = path:match(LAYERS[from][1])
  if n ~= nil then
    local m = layer[rest]
    if m == nil then return nil end
    return string.format(LAYERS[to][2], n, m[1]) .. "." .. param, m[2], param
  end
  local m = top[path]
  if m == nil then return nil end
  return m[1] .. "." .. param, m[2], param
end

-- The placement of a tensor of `ndim` dimensions with TP `style`.
function P.layout_of(ctx, style, param, ndim)
  local mode = ctx.options.layout
  if ndim == 0 or mode == "replicate" then return "Replicate()" end
  if mode == "fsdp" then return "Shard(0)" end
  if style == "colwise" then return "Shard(0)" end
  if style == "rowwise" and param ~= "bias" and ndim >= 2 then return "Shard(1)" end
  return "Replicate()"
end

local function check_options(o)
  local allowed = {
    direction = {hf_to_titan = true, titan_to_hf = true},
    layout = {tp = true, replicate = true, fsdp = true},
    strict = {["true"] = true, ["false"] = true},
  }
  for name, values in pairs(allowed) do
    if not values[o[name]] then
      local list = {}
      for v in pairs(values) do list[#list + 1] = v end
      table.sort(list)
      error(string.format("option %s must be one of %s, got '%s'", name, table.concat(list, ", "), o[name]))
    end
  end
end

function P.convert(ctx, md)
  check_options(ctx.options)
  local strict = ctx.options.strict == "true"
  local keys = dcpp.sorted_keys(md.tensors)
  local entries = {}
  for _, k in ipairs(keys) do
    local ndim = #md.tensors[k].shape
    local key, style, param = P.rename(ctx, k)
    if key == nil then
      if strict then
        error(string.format("strict: key '%s' is not a %s Llama key (direction=%s)", k,
                            ctx.options.direction == "titan_to_hf" and "torchtitan" or "Hugging Face",
                            ctx.options.direction))
      end
      key, style, param = k, "replicate", ""
    end
    entries[#entries + 1] = {key = key, source = k, layout = P.layout_of(ctx, style, param, ndim)}
  end
  local blobs = dcpp.sorted_keys(md.bytes)
  for _, k in ipairs(blobs) do entries[#entries + 1] = {key = k, source = k} end
  return entries
end

return P
