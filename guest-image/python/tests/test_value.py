"""The Python value codec, against the golden vector shared with
ring/src/value.rs."""

import math
import unittest

from reflow.value import BIG, ValueError_, decode, encode, encode_parts

GOLDEN_HEX = (
    "0805000000"
    "010000006e03feffffffffffffff"
    "010000007804000000000000f83f"
    "01000000730503000000" "68c3a9"
    "01000000620602000000" "00ff"
    "010000006c0703000000" "000201"
)
GOLDEN = {"n": -2, "x": 1.5, "s": "hé", "b": b"\x00\xff", "l": [None, True, False]}


class ValueTest(unittest.TestCase):
    def test_golden_vector_matches_the_rust_codec(self):
        data = bytes.fromhex(GOLDEN_HEX)
        self.assertEqual(bytes(encode(GOLDEN)), data)
        got = decode(data)
        self.assertIsInstance(got["b"], memoryview, "bytes must be decoded in place")
        got["b"] = bytes(got["b"])
        self.assertEqual(got, GOLDEN)

    def test_buffers_encode_as_bytes_and_floats_keep_specials(self):
        self.assertEqual(bytes(decode(encode(bytearray(b"ab")))), b"ab")
        self.assertEqual(bytes(decode(encode(memoryview(b"xyz")))), b"xyz")
        self.assertTrue(math.isnan(decode(encode(float("nan")))))
        self.assertEqual(decode(encode(float("-inf"))), float("-inf"))
        self.assertEqual(decode(encode((1, 2))), [1, 2])
        strided = memoryview(b"abcdef")[::2]
        self.assertEqual(bytes(decode(encode(strided))), b"ace")
        import array
        floats = array.array("f", [1.0, 2.0])
        self.assertEqual(bytes(decode(encode(floats))), floats.tobytes())

    def test_large_buffers_stay_references_until_written(self):
        big = bytearray(b"x" * (3 * BIG))
        value = {"big": memoryview(big), "small": b"ab", "list": [bytes(BIG), 1]}
        parts = encode_parts(value)
        self.assertEqual(b"".join(parts), bytes(encode(value)))
        refs = [p for p in parts if isinstance(p, memoryview)]
        self.assertEqual(len(refs), 2, "both large byte strings are by reference")
        big[0] = ord("y")
        self.assertEqual(refs[0][0], ord("y"), "not a copy of the caller's buffer")
        self.assertEqual(encode_parts(None), [bytearray([0])])

    def test_what_cannot_be_sent_is_refused(self):
        for bad in [1 << 64, {1: 2}, object(), {"a": {1, 2}}]:
            with self.assertRaises(ValueError_):
                encode(bad)

    def test_hostile_bytes_are_errors(self):
        for data, msg in [
            (b"", "ends early"),
            (b"\x09", "unknown value tag"),
            (b"\x05\x02\x00\x00\x00\xff\xfe", "not UTF-8"),
            (b"\x06\xff\xff\xff\xff", "ends early"),
            (b"\x07\xff\xff\xff\xff", "ends early"),
            (b"\x00\x00", "follow the value"),
            (b"\x08\x02\x00\x00\x00\x01\x00\x00\x00k\x00\x01\x00\x00\x00k\x00", "appears twice"),
            (b"\x07\x01\x00\x00\x00" * 65 + b"\x00", "deeper"),
        ]:
            with self.assertRaisesRegex(ValueError_, msg):
                decode(data)


if __name__ == "__main__":
    unittest.main()
