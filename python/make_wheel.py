"""make_wheel.py OUT.whl VERSION TORCH_VERSION FILE=ARCNAME...: writes a wheel (PEP 427) holding
the given files under their archive names, with the .dist-info that pip checks: METADATA,
WHEEL (not pure: the extension module is built for one Python and platform, whose tag is in
the file name) and RECORD (every file's sha256 and size)."""

import base64
import hashlib
import os
import sys
import zipfile


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def main():
    out, version, torch_version, *files = sys.argv[1:]
    tag = os.path.basename(out)[:-len(".whl")].split("-", 2)[2]
    dist_info = f"dcpp-{version}.dist-info"
    entries = []
    for spec in files:
        path, name = spec.split("=", 1)
        with open(path, "rb") as f:
            entries.append((name, f.read()))
    metadata = (
        "Metadata-Version: 2.1\n"
        "Name: dcpp\n"
        f"Version: {version}\n"
        "Summary: Distributed checkpoints of sharded PyTorch state dicts, through dcpp's C++ "
        "engine\n"
        f"Requires-Dist: torch=={torch_version}\n"
        "Requires-Python: >=3.9\n")
    wheel = ("Wheel-Version: 1.0\n"
             "Generator: dcpp make_wheel.py\n"
             "Root-Is-Purelib: false\n"
             f"Tag: {tag}\n")
    entries.append((f"{dist_info}/METADATA", metadata.encode()))
    entries.append((f"{dist_info}/WHEEL", wheel.encode()))
    record = [_record_line(n, d) for n, d in entries] + [f"{dist_info}/RECORD,,"]
    entries.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))  # reproducible
            info.external_attr = (0o755 if name.endswith(".so") else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)


if __name__ == "__main__":
    main()
