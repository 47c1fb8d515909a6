from dcpp import _C
