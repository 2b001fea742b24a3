"""An independent safetensors writer (the format's reference layout), for tests/test_io.c.

    python3 tools/gen_safetensors.py tests/data/reference.safetensors

Layout: u64 little-endian header size N; N bytes of JSON {name: {"dtype", "shape", "data_offsets"}} with
keys sorted and no spaces, padded with spaces to a multiple of 8; then the raw little-endian data. The
tensors: "a.weight" f32 (2,3) = 0.5*i - 1, "a.bias" f32 (3,) = [1, -2, 3.25], "b" f64 (2,2) = i / 3,
"count" i64 (1,) = [42], plus __metadata__ {"format": "pt"}.
"""
import json
import struct
import sys


def main(path):
    tensors = [
        ('a.weight', 'F32', [2, 3], struct.pack('<6f', *[0.5 * i - 1 for i in range(6)])),
        ('a.bias', 'F32', [3], struct.pack('<3f', 1.0, -2.0, 3.25)),
        ('b', 'F64', [2, 2], struct.pack('<4d', *[i / 3 for i in range(4)])),
        ('count', 'I64', [1], struct.pack('<q', 42)),
    ]
    header = {'__metadata__': {'format': 'pt'}}
    data = b''
    for name, dt, shape, raw in sorted(tensors):
        header[name] = {'dtype': dt, 'shape': shape, 'data_offsets': [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, sort_keys=True, separators=(',', ':')).encode()
    text += b' ' * ((8 - len(text) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(text)) + text + data)


if __name__ == '__main__':
    main(sys.argv[1])
