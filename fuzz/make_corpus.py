#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/: small, valid (or
nearly valid) inputs in each target's input format, so that the fuzzers start
from files that reach deep into the readers. Run from the repository root:
    python3 fuzz/make_corpus.py
"""
import gzip
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# ---------------------------------------------------------------- safetensors
def safetensors(tensors, metadata=None, pad=True):
    """tensors: list of (name, dtype tag, shape, values)."""
    fmt = {"F32": "<f", "F64": "<d", "I64": "<q"}
    header, blob = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dt, shape, vals in sorted(tensors):
        raw = b"".join(struct.pack(fmt[dt], v) for v in vals)
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blob


lin = [("weight", "F32", [2, 3], [0.5, -1, 2, 0.25, 3, -4]), ("bias", "F32", [2], [1, -1])]
named = [("a", "F64", [2, 2], [1, 2, 3, 4]), ("b", "I64", [3], [7, -8, 9]), ("c", "F32", [], [2.5])]
put("safetensors", "linear", safetensors(lin))
put("safetensors", "named", safetensors(named))
put("safetensors", "all_with_metadata", safetensors(lin + named, {"format": "pt", "note": "x"}))
put("safetensors", "empty_header", safetensors([]))
put("safetensors", "unpadded", safetensors(named, pad=False))
put("safetensors", "truncated", safetensors(lin)[:-3])
put("safetensors", "zero_size", safetensors([("a", "F64", [0, 2], []), ("b", "I64", [3], [1, 2, 3]),
                                             ("c", "F32", [], [0])]))

# ------------------------------------------------------------------------ IDX
def idx(dims, data):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)


def idx_input(opt, images, labels):
    return bytes([opt]) + struct.pack("<H", len(images)) + images + labels


imgs = idx([3, 2, 2], range(0, 120, 10))
labs = idx([3], [0, 2, 1])
put("idx", "f32", idx_input(0, imgs, labs))
put("idx", "f64", idx_input(1, imgs, labs))
put("idx", "gz", idx_input(2, gzip.compress(imgs, mtime=0), labs))
put("idx", "plain_through_gz_path", idx_input(3, imgs, labs))
put("idx", "rank4", idx_input(0, idx([2, 1, 2, 2], range(8)), idx([2], [1, 0])))
put("idx", "one_dim", idx_input(0, idx([4], [0, 255, 1, 2]), idx([4], [3, 3, 0, 1])))
put("idx", "empty", idx_input(0, idx([0, 5], []), idx([0], [])))
put("idx", "count_mismatch", idx_input(0, imgs, idx([2], [0, 1])))
put("idx", "files_f64", idx_input(5, imgs, labs))
put("idx", "files_rank4", idx_input(4, idx([2, 1, 2, 2], range(8)), idx([2], [1, 0])))
put("idx", "gz_f64", idx_input(3, gzip.compress(idx([2, 3], range(6)), mtime=0), idx([2], [4, 1])))

# ------------------------------------------------------------------------ CSV
# Two option bytes (see fuzz_csv.c): label column, dtype, header, missing; delimiter, labels,
# given class names, a second load through a file.
HEADER = {"detect": 0, "none": 1, "present": 2, "bad": 3}
DELIM = {None: 0, ",": 1, ";": 2, "\t": 3, " ": 4, "|": 5, '"': 6}
LABELS = {"auto": 0, "int": 1, "string": 2}


def csv_input(label_col, f64, text, header="detect", skip=False, delim=None, labels="auto", names=False,
              via_file=False):
    o0 = ((label_col + 8) & 15) | (16 if f64 else 0) | HEADER[header] << 5 | (128 if skip else 0)
    o1 = DELIM[delim] | LABELS[labels] << 3 | (32 if names else 0) | (64 if via_file else 0)
    return bytes([o0, o1]) + text.encode()


put("csv", "header_last_label", csv_input(-1, False, "x,y,label\n0.5,1,0\n-2,3.25,1\n4,5e-1,2\n"))
put("csv", "no_header_first_label", csv_input(0, True, "1,0.5,0.25\n0,1,2\n2,-1,-2\n", via_file=True))
put("csv", "crlf_semicolons", csv_input(1, False, "a;b;c\r\n1;0;2\r\n3;1;4\r\n"))
put("csv", "spaces_tabs", csv_input(-1, True, "1 2 0\n3\t4\t1\n"))
put("csv", "empty_field", csv_input(-1, False, "a,b,c,label\n1,,5,0\n1,2,3,1\n"))
put("csv", "quoted", csv_input(-1, False, '"a","b","label"\n"1","2","0"\n3,4,1\n'))
put("csv", "bad_label", csv_input(-1, False, "1,2,0.5\n1,2,nan\n1,2,1e300\n"))
put("csv", "one_row", csv_input(-1, True, "1,2,3,0\n"))
put("csv", "string_labels", csv_input(-1, False, "f,g,species\n1,2,setosa\n3,4,virginica\n5,6,setosa\n",
                                      labels="string", via_file=True))
put("csv", "given_names", csv_input(0, True, "a;1;2\nb;3;4\n0;5;6\n", header="none", delim=";", names=True))
put("csv", "skip_missing", csv_input(-1, False, "a|b|y\n1|NA|0\n2|3|1\n?|4|2\n5|6|\n", header="present",
                                     skip=True, delim="|"))
put("csv", "int_labels_bom", csv_input(-1, True, "\ufeffa\tb\n1.5\t3.0\n2\t4e0\n", labels="int", delim="\t"))
put("csv", "quoted_newline", csv_input(-1, False, '"x\ny",z\n"1,5",2\n"3",""\n', skip=True, via_file=True))
put("csv", "bad_delimiter", csv_input(-1, False, "1,2,0\n", delim='"'))
put("csv", "bad_header_option", csv_input(-1, False, "1,2,0\n", header="bad"))

# --------------------------------------------------------------------- einsum
def ein(spec, opt=0, tail=bytes(range(1, 64))):
    return bytes([opt]) + spec.encode() + b"\0" + tail


specs = ["ij,jk->ik", "ij,jk", "ii->i", "ii", "ij->ji", "i,i->", "i,j->ij", "bij,bjk->bik", "...ij,...jk->...ik",
         "ij,jk,kl->il", "abc,cd,de->abe", "a...,...a", "i j , j k -> i k", "ij,ij->ij", "iij->ij", "Ab,bC->AC"]
for k, s in enumerate(specs):
    put("einsum", "spec%02d" % k, ein(s, 16 if k % 2 == 0 else 1))
put("einsum", "second_order", ein("ij,jk->ik", 8 | 16))
put("einsum", "bent_shape", ein("ij,jk->ik", 2))
put("einsum", "wrong_count", ein("ij,jk->ik", 4))
put("einsum", "bad_spec", ein("ij,jk->iq"))

# ------------------------------------------------------------ op programs
# The encoding of fuzz_ops.c: a header byte; per leaf a kind byte (bit 0 f64, bit 1
# no grad, 7 mod 8 i64), a rank byte, sizes, one byte per value ((v - 120) / 16);
# then per op: op code, three operand picks, two axis bytes, a value byte, keepdim,
# the number of axes and the axes, then the op's own bytes.
def leaf(f64, shape, vals=None):
    n = 1
    for s in shape:
        n *= s
    vals = vals if vals is not None else [120 + 8 * ((3 * i) % 7 - 3) for i in range(n)]
    return bytes([1 if f64 else 0, len(shape)] + list(shape) + list(vals))


def op(code, a=0, c=1, d=0, ax=0, ax2=1, val=136, keep=0, axes=(), extra=()):
    return bytes([code, a, c, d, ax, ax2, val, keep, len(axes)] + list(axes) + list(extra))


two = leaf(True, [2, 3]) + leaf(True, [3, 2])
progs = {
    "matmul_tanh": bytes([1]) + two + op(54, 0, 1) + op(19, 2) + op(38, 3),
    "broadcast_add_softmax": bytes([1]) + leaf(True, [2, 3]) + leaf(True, [3]) + op(0, 0, 1) + op(56, 2, ax=2),
    "reduce_axes": bytes([0]) + leaf(False, [2, 3, 2]) + op(40, 0, axes=(1,)) + op(42, 1, keep=1, axes=(2,)),
    "views": bytes([0]) + leaf(True, [2, 3]) + op(44, 0, ax=0, ax2=1) + op(46, 1, ax=1, extra=(7, 9)) + op(49, 2),
    "second_order": bytes([4 | 1]) + two + op(2, 0, 0) + op(54, 2, 1) + op(20, 3),
    "retain": bytes([8 | 1]) + two + op(54, 0, 1) + op(23, 2),
    "inplace_then_backward": bytes([0]) + leaf(True, [2, 2]) + op(13, 0) + op(70, 1, 0, extra=(4,)) + op(38, 1),
    "invalid_axis": bytes([0]) + leaf(True, [2, 3]) + op(56, 0, ax=5) + op(46, 0, ax=9),
    "layer_norm_ce": bytes([1]) + leaf(True, [3, 4]) + bytes([7, 1, 3, 1, 2, 3]) + op(60, 0) + op(58, 2, 1),
    "linalg": bytes([0]) + leaf(True, [2, 2], [136, 120, 128, 152]) + op(61, 0) + op(62, 0) + op(63, 0),
    "concat_stack_split": bytes([1]) + two + op(48, 0, 0, ax=1) + op(52, 0, 0) + op(53, 2, ax=1, extra=(3, 2, 2, 1, 0)),
}
for name, data in progs.items():
    put("ops", name, data)
