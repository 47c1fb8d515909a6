"""dcpp_proto_cc: C++ from a .proto with the system protoc (offline; no @com_google_protobuf)."""

def dcpp_proto_cc(name, src, deps = [], imports = [], visibility = None):
    """Generates <src>.pb.{h,cc} with `protoc --cpp_out` and wraps them in cc_library `name`.

    `imports`: the .proto files `src` imports (their dcpp_proto_cc targets go in `deps`).
    """
    base = src[:-len(".proto")]
    native.genrule(
        name = name + "_genproto",
        srcs = [src] + imports,
        outs = [base + ".pb.h", base + ".pb.cc"],
        cmd = "protoc --proto_path=. --cpp_out=$(GENDIR) $(location %s)" % src,
        message = "protoc " + src,
    )
    native.cc_library(
        name = name,
        srcs = [base + ".pb.cc"],
        hdrs = [base + ".pb.h"],
        # Generated code: our warning flags do not apply to it.
        copts = ["-w"],
        deps = deps + ["//third_party/protobuf"],
        visibility = visibility,
    )
