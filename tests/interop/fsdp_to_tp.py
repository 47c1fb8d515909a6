"""The headline story, PyTorch's two ends (fsdp_to_tp_story_test.sh runs dcpp in between):

  python fsdp_to_tp.py save CKPT REF
      2 gloo ranks train the seeds' MLP (Linear(10, 16), ReLU, Linear(16, 10); seed 0) one
      Adam step under FSDP2 fully_shard and save model and optimizer state with
      torch.distributed.checkpoint: {"net1.weight": Shard(0) DTensor, ...,
      "optim": {"state": ..., "param_groups": ...}}. Rank 0 also writes every key whole
      (REF/<fqn>.pt / .obj, dist_util.write_references).

  python fsdp_to_tp.py load DST REF
      2 gloo ranks build the same MLP with other values (seed 5, its own Adam step) under
      parallelize_module (net1 ColwiseParallel, net2 RowwiseParallel), check that its state
      differs from REF, load DST (the FSDP checkpoint converted by dcpp) with
      torch.distributed.checkpoint.load into get_state_dict(model, optimizer) and
      set_state_dict it back; then every parameter's and optimizer tensor's full_tensor(),
      every param_groups value and the TP placements must be the original's, and DST's
      metadata must already be TP-sharded (net1 rows, net2.weight columns, net2.bias whole).

  python fsdp_to_tp.py save-nested CKPT REF / load-nested DST REF
      The same with PyTorch's other usual nesting, {"model": model_sd, "optim": optim_sd}:
      parameters are "model.net1.weight", their state "optim.state.net1.weight.exp_avg", and
      the state must still come out sharded like its parameter.
"""

import os

import dist_util

WORLD = 2


def model_and_optimizer(parallel, seed):
    import torch

    model = dist_util.mlp(10, 16, 10, seed=seed)
    parallel(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    torch.manual_seed(seed + 1)
    model(torch.rand(20, 10)).sum().backward()
    opt.step()
    return model, opt


def nest(msd, osd, nested):
    """The state dict dcp.save and dcp.load get: the model's keys at the top level next to
    "optim", or under "model"."""
    return {"model": msd, "optim": osd} if nested else dict(msd, optim=osd)


def save(rank, ckpt, ref, nested=False):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (WORLD,))
    model, opt = model_and_optimizer(lambda m: fully_shard(m, mesh=mesh), seed=0)
    msd, osd = get_state_dict(model, opt)
    sd = nest(msd, osd, nested)
    dcp.save(sd, checkpoint_id=ckpt)
    dist_util.write_references(rank, sd, ref)
    if rank == 0:
        print(f"saved FSDP({WORLD}) checkpoint of {len(msd)} parameters and their Adam state into {ckpt}")


def check_tp_metadata(dst, nested):
    """DST is TP-sharded already: PyTorch sees the chunks dcpp's convert wrote."""
    import torch.distributed.checkpoint as dcp

    md = dcp.FileSystemReader(dst).read_metadata().state_dict_metadata
    p = "model." if nested else ""
    want = {
        p + "net1.weight": [[0, 0], [8, 0]], p + "net1.bias": [[0], [8]],
        p + "net2.weight": [[0, 0], [0, 8]], p + "net2.bias": [[0]],
        "optim.state.net1.weight.exp_avg": [[0, 0], [8, 0]],
        "optim.state.net1.bias.exp_avg_sq": [[0], [8]],
        "optim.state.net2.weight.exp_avg_sq": [[0, 0], [0, 8]],
        "optim.state.net2.weight.step": [[]],
    }
    for key, offsets in want.items():
        got = sorted(list(c.offsets) for c in md[key].chunks)
        if got != offsets:
            raise AssertionError(f"{dst}: {key} has chunks at {got}, want TP's {offsets}")


def load(rank, dst, ref, nested=False):
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint._nested_dict import flatten_state_dict
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Replicate, Shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    mesh = init_device_mesh("cpu", (WORLD,))
    plan = {"net1": ColwiseParallel(), "net2": RowwiseParallel()}
    model, opt = model_and_optimizer(lambda m: parallelize_module(m, mesh, plan), seed=5)
    msd, osd = get_state_dict(model, opt)

    want_w = torch.load(os.path.join(ref, ("model." if nested else "") + "net1.weight.pt"))
    if torch.equal(msd["net1.weight"].full_tensor(), want_w):
        raise AssertionError("the TP model equals the FSDP one before loading: the test proves nothing")

    dcp.load(nest(msd, osd, nested), checkpoint_id=dst)
    set_state_dict(model, opt, model_state_dict=msd, optim_state_dict=osd)

    placements = {"net1.weight": Shard(0), "net1.bias": Shard(0), "net2.weight": Shard(1), "net2.bias": Replicate()}
    for name, p in model.named_parameters():
        if p.placements != (placements[name],):
            raise AssertionError(f"{name}: placement {p.placements} after load, want {placements[name]}")

    msd, osd = get_state_dict(model, opt)  # what the model and optimizer now hold
    flat, _ = flatten_state_dict(nest(msd, osd, nested))
    refs = {os.path.splitext(n)[0] for n in os.listdir(ref)}
    if set(flat) != refs:
        raise AssertionError(f"keys differ: only loaded {sorted(set(flat) - refs)}, only saved {sorted(refs - set(flat))}")
    problems = []
    for fqn, v in flat.items():
        if isinstance(v, DTensor):
            v = v.full_tensor()
        if isinstance(v, torch.Tensor):
            want = torch.load(os.path.join(ref, fqn + ".pt"))
            if v.dtype != want.dtype or not torch.equal(v.detach(), want):
                problems.append(f"{fqn}: got {v}, want {want}")
        else:
            want = torch.load(os.path.join(ref, fqn + ".obj"), weights_only=False)
            if v != want:
                problems.append(f"{fqn}: got {v!r}, want {want!r}")
    if problems:
        raise AssertionError(f"rank {rank}: " + "\n".join(problems))
    if rank == 0:
        check_tp_metadata(dst, nested)
        print(f"TP({WORLD}) model loaded from {dst}: {len(flat)} keys equal the FSDP original")


def worker(rank, world, mode, path, ref):
    nested = mode.endswith("-nested")
    {"save": save, "load": load}[mode.removesuffix("-nested")](rank, path, ref, nested)


if __name__ == "__main__":
    dist_util.main(os.path.abspath(__file__), WORLD, worker)
