"""Repository rule that exposes an installed LibTorch as @torch.

LibTorch is found, in order:
  1. $DCPP_LIBTORCH: an unzipped libtorch folder (with include/ and lib/);
  2. the `torch` package of $DCPP_PYTHON (default: python3 on PATH), i.e. the PyPI wheel that
     scripts/setup.sh installs (torch==2.11.0).
The repository symlinks include/ and lib/ and writes a BUILD file from BUILD.torch.tpl.
"""

def _fail_with(ctx, msg):
    fail("dcpp: cannot find LibTorch: %s\nRun scripts/setup.sh, or point DCPP_LIBTORCH at an unzipped libtorch." % msg)

def _torch_repository_impl(ctx):
    root = ctx.os.environ.get("DCPP_LIBTORCH", "")
    abi = ctx.os.environ.get("DCPP_TORCH_CXX11_ABI", "1")
    version = "unknown"
    python_exe = ""
    python_include = ""
    wheel_tag = "py3-none-any"
    if not root:
        python = ctx.os.environ.get("DCPP_PYTHON", "python3")
        script = "import os, sys, torch; print(sys.executable); print(os.path.dirname(torch.__file__)); print(int(torch._C._GLIBCXX_USE_CXX11_ABI)); print(torch.__version__); import sysconfig; print(sysconfig.get_paths()['include']); v = 'cp%d%d' % sys.version_info[:2]; print(v + '-' + v + '-' + sysconfig.get_platform().replace('-', '_').replace('.', '_'))"
        res = ctx.execute([python, "-c", script], quiet = True)
        if res.return_code != 0:
            _fail_with(ctx, "`%s -c 'import torch'` failed:\n%s" % (python, res.stderr))
        lines = res.stdout.strip().split("\n")
        python_exe = lines[-6]
        root = lines[-5]
        abi = lines[-4]
        version = lines[-3]
        python_include = lines[-2]
        wheel_tag = lines[-1]
    if not ctx.path(root + "/include/c10").exists or not ctx.path(root + "/lib").exists:
        _fail_with(ctx, "%s has no include/c10 or lib/" % root)

    # Where the CUDA wheel keeps the libraries that libtorch_cpu/libtorch_cuda need at link time.
    nvidia = ctx.path(root + "/../nvidia")
    rpath_link = []
    if nvidia.exists:
        for d in nvidia.readdir():
            if ctx.path(str(d) + "/lib").exists:
                rpath_link.append(str(d) + "/lib")

    # The wheel carries an old copy of protobuf's headers (include/google/protobuf) that would
    # shadow the system protobuf our generated code is compiled against: leave it out.
    for entry in ctx.path(root + "/include").readdir():
        if entry.basename != "google":
            ctx.symlink(entry, "include/" + entry.basename)
    ctx.symlink(root + "/lib", "lib")
    # The Python that has this torch (for interop tests and torchrun launches); empty when
    # LibTorch came from DCPP_LIBTORCH.
    ctx.file("python.txt", python_exe + "\n")
    # That Python's C headers, for the extension module (//python); an empty library when
    # LibTorch came from DCPP_LIBTORCH.
    if python_include and ctx.path(python_include + "/Python.h").exists:
        ctx.symlink(python_include, "python_include")
    else:
        ctx.file("python_include/README", "no Python headers: LibTorch came from DCPP_LIBTORCH\n")
    # For //python:wheel: the wheel's file name tag (cp311-cp311-linux_x86_64) and the torch it
    # was built against (its version without the local part, e.g. 2.11.0).
    ctx.file("python.bzl", "PYTHON_WHEEL_TAG = %r\nTORCH_VERSION = %r\n" % (wheel_tag, version.split("+")[0]))
    ctx.template("BUILD", ctx.attr._build_tpl, {
        "%{LIBDIR}": str(ctx.path(root + "/lib").realpath),
        "%{ABI}": abi,
        "%{RPATH_LINK}": repr(["-Wl,-rpath-link," + p for p in rpath_link]),
        "%{VERSION}": version,
    })

torch_repository = repository_rule(
    implementation = _torch_repository_impl,
    environ = ["DCPP_LIBTORCH", "DCPP_PYTHON", "DCPP_TORCH_CXX11_ABI", "PATH"],
    local = True,
    attrs = {"_build_tpl": attr.label(default = "//third_party/torch:BUILD.torch.tpl")},
)
