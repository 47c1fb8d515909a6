"""Bad DCP checkpoints for dcp_bad_input_test.sh, made by the real PyTorch (one process).

  python bad_input.py OUT MARKER

OUT/good            a real DCP checkpoint (torch.distributed.checkpoint.save, no_dist)
OUT/evil_global     .metadata is a protocol-2 pickle that calls os.system("touch MARKER")
                    (GLOBAL 'os system'), the data files of good beside it
OUT/evil_nested     good's real Metadata with an object whose __reduce__ is os.system
                    ("touch MARKER") hidden in planner_data: pickle writes it as
                    STACK_GLOBAL 'posix' 'system' deep inside legitimate DCP classes
OUT/truncated_md    good with .metadata cut to half its length
OUT/version         good with Metadata.version "9.9.9" (dataclasses.replace, pickled back)
OUT/truncated_data  good with its data file cut in the middle of an item; OUT/truncated_key
                    holds that item's key and OUT/truncated_file the file's name
OUT/corrupt         good with one bit of w's data flipped (its zip entry's CRC-32 no longer holds)
OUT/transformed     good whose metadata says every item is zstd-compressed (a stream transform)
OUT/corrupt_t       a transposed tensor 't' (stored with its strides) with one bit of its data
                    flipped
OUT/eocd            good with one byte of a bytes item's zip end record flipped (no CRC-32
                    covers it), the first such byte that makes dcp.load fail; OUT/eocd_key
                    holds that item's key
OUT/evil_bytes      a real DCP checkpoint whose bytes item 'evil' is an object whose __reduce__
                    is os.system("touch MARKER"): torch.save pickles it as posix.system

Both payloads are first proven live: Python's own pickle.loads of the same bytes with a probe
path instead of MARKER runs the command (the probe file appears and is removed), so a dcpp that
executed pickles would create MARKER.
"""

import dataclasses
import os
import pickle
import shutil
import struct
import sys

import torch
import torch.distributed.checkpoint as dcp


class Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def global_payload(cmd):
    """pickle protocol 2: os.system(cmd) through GLOBAL 'os system' and REDUCE."""
    data = cmd.encode()
    return b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(data)) + data + b"\x85R."


def prove_live(payload_of, out):
    probe = os.path.join(out, "probe")
    pickle.loads(payload_of("touch " + probe))
    assert os.path.exists(probe), "the payload does not run under Python's pickle"
    os.remove(probe)


def flip(path, at):
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x10]))


def copy_good(out, name):
    dst = os.path.join(out, name)
    shutil.copytree(os.path.join(out, "good"), dst)
    return dst


def main(out, marker):
    os.makedirs(out, exist_ok=True)
    good = os.path.join(out, "good")
    torch.manual_seed(0)
    sd = {"w": torch.rand(64, 64), "b": torch.rand(8), "step": 3, "names": ["a", "b"]}
    dcp.save(sd, checkpoint_id=good, no_dist=True)
    reader = dcp.FileSystemReader(good)
    md = reader.read_metadata()

    prove_live(global_payload, out)
    d = copy_good(out, "evil_global")
    with open(os.path.join(d, ".metadata"), "wb") as f:
        f.write(global_payload("touch " + marker))

    def nested_payload(cmd):
        return pickle.dumps(dataclasses.replace(md, planner_data={"x": Evil(cmd)}))

    prove_live(nested_payload, out)
    assert b"posix" in nested_payload("x") and b"system" in nested_payload("x")
    d = copy_good(out, "evil_nested")
    with open(os.path.join(d, ".metadata"), "wb") as f:
        f.write(nested_payload("touch " + marker))

    d = copy_good(out, "truncated_md")
    path = os.path.join(d, ".metadata")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])

    d = copy_good(out, "version")
    with open(os.path.join(d, ".metadata"), "wb") as f:
        pickle.dump(dataclasses.replace(md, version="9.9.9"), f)
    assert dcp.FileSystemReader(d).read_metadata().version == "9.9.9"

    # The tensor item that lies last in its file: cut the file in its middle.
    d = copy_good(out, "truncated_data")
    last_key, last = max(((k.fqn, v) for k, v in md.storage_data.items() if k.fqn == "w"),
                         key=lambda kv: kv[1].offset)
    path = os.path.join(d, last.relative_path)
    with open(path, "r+b") as f:
        f.truncate(last.offset + last.length // 2)
    with open(os.path.join(out, "truncated_key"), "w") as f:
        f.write(last_key)
    with open(os.path.join(out, "truncated_file"), "w") as f:
        f.write(last.relative_path)

    # A flipped bit in the middle of w's data (16 KiB of its item): the archive's CRC-32 says so.
    d = copy_good(out, "corrupt")
    item = md.storage_data[next(k for k in md.storage_data if k.fqn == "w")]
    with open(os.path.join(d, item.relative_path), "r+b") as f:
        f.seek(item.offset + item.length // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x10]))
    # Every item behind a stream transform (what FileSystemWriter(_extensions=[ZStandard()])
    # records; the data stays plain, only the metadata says so).
    d = copy_good(out, "transformed")
    storage = {k: dataclasses.replace(v, transform_descriptors=["stream.zstd/1"]) for k, v in md.storage_data.items()}
    with open(os.path.join(d, ".metadata"), "wb") as f:
        pickle.dump(dataclasses.replace(md, storage_data=storage), f)
    # A transposed tensor keeps its strides in its archive: a flipped bit in its storage.
    d = os.path.join(out, "corrupt_t")
    dcp.save({"t": torch.rand(16, 8).t()}, checkpoint_id=d, no_dist=True)
    tmd = dcp.FileSystemReader(d).read_metadata()
    item = next(v for k, v in tmd.storage_data.items() if k.fqn == "t")
    flip(os.path.join(d, item.relative_path), item.offset + item.length // 2)

    # One byte of a bytes item's end record: dcp.load must fail on it (else the test is moot).
    for key in ("step", "names"):
        item = next(v for k, v in md.storage_data.items() if k.fqn == key)
        for i in range(22):  # (torch 2.11's reader fails only on the signature's bytes)
            d = copy_good(out, "eocd")
            flip(os.path.join(d, item.relative_path), item.offset + item.length - 22 + i)
            try:
                dcp.load({"w": torch.empty(64, 64), "b": torch.empty(8), "step": 0, "names": []},
                         checkpoint_id=d, no_dist=True)
            except BaseException:  # (DCP's CheckpointException is a BaseException)
                with open(os.path.join(out, "eocd_key"), "w") as f:
                    f.write(key)
                break
            shutil.rmtree(d)
        else:
            continue
        break
    assert os.path.exists(os.path.join(out, "eocd_key")), "no end-record byte made dcp.load fail"

    # An object that runs os.system when unpickled, saved as a bytes item by the real dcp.save.
    d = os.path.join(out, "evil_bytes")
    dcp.save({"w": torch.rand(4, 4), "evil": Evil("touch " + marker)}, checkpoint_id=d, no_dist=True)
    assert not os.path.exists(marker)
    print(f"made bad checkpoints in {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
