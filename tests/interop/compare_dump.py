"""Compares what dcpp loaded (dcpp_dump's OUT/<fqn>.pt and OUT/<fqn>.bytes) with PyTorch's
references (REF/<fqn>.pt: the whole tensor; REF/<fqn>.obj: the object, both torch.save'd).

  python compare_dump.py DUMP REF [DUMP REF ...]

Every reference must have its dump and the dump nothing more; tensors must agree in dtype,
shape and every bit (torch.equal), objects in type and value (the dumped bytes are the
torch.save archive DCP stored, read back with torch.load). Prints
"DUMP: compared N tensors, M objects: equal" per pair and exits 0, else lists each difference
and exits 1.
"""

import io
import os
import sys

import torch


def main(dump, ref):
    refs = sorted(os.listdir(ref))
    dumps = set(os.listdir(dump))
    problems, tensors, objects = [], 0, 0
    if not refs:
        problems.append(f"no references in {ref}")
    for name in refs:
        fqn, ext = os.path.splitext(name)
        want = torch.load(os.path.join(ref, name), weights_only=False)
        got_name = fqn + (".pt" if ext == ".pt" else ".bytes")
        dumps.discard(got_name)
        path = os.path.join(dump, got_name)
        if not os.path.exists(path):
            problems.append(f"{fqn}: dcpp loaded no {got_name}")
            continue
        if ext == ".pt":
            tensors += 1
            got = torch.load(path, weights_only=True)
            if got.dtype != want.dtype or got.shape != want.shape:
                problems.append(f"{fqn}: {got.dtype} {list(got.shape)}, want {want.dtype} {list(want.shape)}")
            elif not torch.equal(got, want):
                problems.append(f"{fqn}: values differ:\n  got  {got}\n  want {want}")
        else:
            objects += 1
            with open(path, "rb") as f:
                got = torch.load(io.BytesIO(f.read()), weights_only=False)
            if type(got) is not type(want) or got != want:
                problems.append(f"{fqn}: got {got!r}, want {want!r}")
    for extra in sorted(dumps):
        problems.append(f"{extra}: dcpp loaded a key PyTorch did not save")
    for p in problems:
        print(f"FAIL {dump}: {p}")
    if problems:
        return 1
    print(f"{dump}: compared {tensors} tensors, {objects} objects: equal")
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or len(args) % 2:
        sys.exit("usage: compare_dump.py DUMP REF [DUMP REF ...]")
    sys.exit(max(main(args[i], args[i + 1]) for i in range(0, len(args), 2)))
