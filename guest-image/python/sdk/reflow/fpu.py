"""The calling thread's floating-point environment, for diagnostics: numpy
recognises the x87 long double type by computing with it, and an x87 unit
left at a precision other than 64 bits (control word 0x37f, Linux's
default) makes `import numpy` fail. A worker whose start fails says what
its control word was."""

import ctypes

DEFAULT_X87_CONTROL_WORD = 0x37F


def x87_control_word():
    """The x87 control word (fegetenv's first field), or None where it
    cannot be read."""
    try:
        libm = ctypes.CDLL("libm.so.6")  # not find_library: it runs programs
        env = ctypes.create_string_buffer(64)  # fenv_t is 32 bytes on x86_64
        if libm.fegetenv(env) != 0:
            return None
        return int.from_bytes(env.raw[:2], "little")
    except (OSError, AttributeError):
        return None


def describe():
    """`x87 control word 0x37f` (with a warning when not the default)."""
    cw = x87_control_word()
    if cw is None:
        return "x87 control word unknown"
    note = "" if cw == DEFAULT_X87_CONTROL_WORD else f", not the default {DEFAULT_X87_CONTROL_WORD:#x}"
    return f"x87 control word {cw:#x}{note}"
