"""Thin wrappers over the C++ rules that carry dcpp's compiler flags in one place."""

# Flags for our own code. LibTorch, CUDA and other dependencies come in as system headers, so
# their warnings do not show.
DCPP_COPTS = [
    "-std=c++17",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
] + select({
    "//bazel:opt": ["-O2"],
    "//conditions:default": [],
})

DCPP_CUDA_DEFINES = select({
    "//bazel:cuda": ["DCPP_WITH_CUDA=1"],
    "//conditions:default": [],
})

def dcpp_cc_library(name, copts = [], local_defines = [], **kwargs):
    native.cc_library(
        name = name,
        copts = DCPP_COPTS + copts,
        local_defines = DCPP_CUDA_DEFINES + local_defines,
        **kwargs
    )

def dcpp_cc_binary(name, copts = [], local_defines = [], **kwargs):
    native.cc_binary(
        name = name,
        copts = DCPP_COPTS + copts,
        local_defines = DCPP_CUDA_DEFINES + local_defines,
        **kwargs
    )

def dcpp_cc_test(name, copts = [], local_defines = [], deps = [], main = True, **kwargs):
    """A GoogleTest binary; `main = False` when the test defines its own main()."""
    native.cc_test(
        name = name,
        copts = DCPP_COPTS + copts,
        local_defines = DCPP_CUDA_DEFINES + local_defines,
        deps = deps + ["//third_party/gtest:gtest_main" if main else "//third_party/gtest"],
        **kwargs
    )

def embed_files(name, srcs, namespace, function, visibility = None):
    """A cc_library whose `function()` returns {(name, bytes)} for each file in `srcs`.

    Each file is named by its path relative to the workspace root (e.g. planners/x.lua).
    """
    native.genrule(
        name = name + "_gen",
        srcs = srcs,
        outs = [name + ".cc"],
        tools = ["//bazel:embed"],
        cmd = "$(location //bazel:embed) $@ %s %s " % (namespace, function) +
              " ".join(["%s=$(location %s)" % (_workspace_path(s), s) for s in srcs]),
    )
    native.cc_library(
        name = name,
        srcs = [name + ".cc"],
        copts = ["-std=c++17"],
        visibility = visibility,
    )

def _workspace_path(label):
    label = str(label)
    if label.startswith("//"):
        pkg, _, file = label[2:].partition(":")
        return pkg + "/" + file if pkg else file
    if label.startswith(":"):
        return native.package_name() + "/" + label[1:]
    return native.package_name() + "/" + label

def dcpp_fuzz_target(name, srcs, deps = [], **kwargs):
    """A libFuzzer target (LLVMFuzzerTestOneInput). It links only with clang's libFuzzer, so it
    builds only under --config=fuzz (scripts/fuzz.sh) and is tagged manual: `bazel test //...`
    and `bazel build //...` leave it out."""
    native.cc_binary(
        name = name,
        srcs = srcs,
        copts = DCPP_COPTS,
        linkopts = ["-fsanitize=fuzzer"],
        tags = ["manual"],
        deps = deps,
        **kwargs
    )
