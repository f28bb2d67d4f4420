"""Writes ggml_vectors.txt: fixed inputs and what llama.cpp's ggml computes
from them, for kernels/quant.test.cpp. Run through make_ggml_vectors.sh.
Plain Python 3 (ctypes, struct, random: no numpy).

argv[1]: path of libggml-base.so (node-llama-cpp 3.22.1, llama.cpp v0.5.0 /
de3ff81); argv[2]: output file.

File format (text): lines starting with '#' are comments; then records, each
a header line "<name> <n_bytes>" followed by n_bytes as hex (little-endian
memory image: f32 arrays, ggml blocks, f16/bf16 bits), 64 bytes per line.
"""
import ctypes
import math
import random
import struct
import sys

lib = ctypes.CDLL(sys.argv[1])
out_path = sys.argv[2]
rng = random.Random(20240611)
records = []


def f32_bytes(values):
    return struct.pack(f"<{len(values)}f", *values)


def run(fn, src, dst_size, n):
    """Calls ggml's fn(src, dst, n) on byte strings; returns dst's bytes."""
    s = ctypes.create_string_buffer(bytes(src), len(src))
    d = ctypes.create_string_buffer(dst_size)     # zero-filled
    getattr(lib, fn)(s, d, ctypes.c_int64(n))
    return d.raw


def f32(v):
    """v rounded to f32 (as a Python float)."""
    return struct.unpack("<f", struct.pack("<f", v))[0]


def f32_next(v, up):
    bits = struct.unpack("<I", struct.pack("<f", v))[0]
    if v == 0:
        bits = 1 if up else 0x80000001
    elif (v > 0) == up:
        bits += 1
    else:
        bits -= 1
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def normal(count, scale=1.0):
    return [rng.gauss(0, 1) * scale for _ in range(count)]


def signs(count, scale):
    return [rng.choice((-1.0, 1.0)) * scale for _ in range(count)]


# ---- Q8_0 / Q4_0 inputs: blocks of 32 -------------------------------------
def legacy_inputs():
    blocks = [normal(32) for _ in range(16)]          # random normal
    blocks.append([0.0] * 32)                         # zeros
    blocks.append([0.7] * 32)                         # all equal
    blocks.append([-3.25] * 32)
    blocks += [signs(32, 1e4), signs(32, 1e4)]        # large ±1e4
    blocks.append(normal(32, 1e4))
    blocks.append(normal(32, 1e7))                    # d overflows f16 (Inf)
    blocks.append(normal(32, 1e-30))                  # tiny: f16(d) = 0, 1/d finite
    blocks.append(normal(32, 1e-6))                   # f16(d) subnormal
    b = normal(32, 1e-39)                             # denormals next to a normal max
    b[5] = 1.0
    blocks.append(b)
    blocks.append(normal(32, 1e-40))                  # all denormal: 1/d overflows
    b = normal(32)                                    # +m and -m: the first wins (Q4_0)
    b[3], b[20] = 5.0, -5.0
    blocks.append(b)
    b = normal(32)
    b[3], b[20] = -5.0, 5.0
    blocks.append(b)
    # Ties for Q8_0: amax 127 gives d = 1, so x = k + 0.5 is a tie of roundf.
    ks = [k + 0.5 for k in range(-127, 127)]
    for i in range(0, len(ks), 31):
        chunk = ks[i:i + 31]
        blocks.append([127.0] + chunk + [0.0] * (31 - len(chunk)))
    # amax 63.5: d = 0.5, id = 2.
    blocks.append([-63.5] + [(k - 15) * 0.5 + 0.25 for k in range(31)])
    # Ties for Q4_0: m = -8 (d = 1), 8 (d = -1), -4 (d = 0.5): x*id + 8.5
    # lands on integers and half-integers.
    for m in (-8.0, 8.0, -4.0):
        d = m / -8
        ks = [k + 0.5 for k in range(-8, 8)] + list(range(-7, 8))
        blocks.append([m] + [k * d for k in ks])
    # Just below / above the half steps.
    ks = [k + 0.5 for k in range(-7, 8)]
    for up in (False, True):
        blocks.append([-8.0] + [f32_next(k, up) for k in ks] + [0.0] * 16)
    for b in blocks:
        assert len(b) == 32, len(b)
    return [v for b in blocks for v in b]


x = legacy_inputs()
n = len(x)
xb = f32_bytes(x)
records.append(("legacy.input.f32", xb))
records.append(("q8_0.ggml", run("quantize_row_q8_0_ref", xb, n // 32 * 34, n)))
records.append(("q4_0.ggml", run("quantize_row_q4_0_ref", xb, n // 32 * 18, n)))

# ---- Q8_K inputs: blocks of 256 -------------------------------------------
kb = [normal(256) for _ in range(4)]
kb.append([0.0] * 256)
kb.append([-1.5] * 256)
kb.append(signs(256, 1e4))
kb.append(normal(256, 1e-30))
b = normal(256, 1e-39)
b[100] = -2.0
kb.append(b)
kb.append(normal(256, 1e-40))                         # iscale overflows
b = normal(256)
b[7], b[200] = 4.0, -4.0
kb.append(b)
# Ties for round-half-even: m = -127 gives iscale = 1.
kb.append([-127.0] + [(k - 127) + 0.5 for k in range(255)])
xk = [v for b in kb for v in b]
xkb = f32_bytes(xk)
records.append(("q8_k.input.f32", xkb))
# Zero-filled output: for zero blocks ggml leaves bsums unwritten.
records.append(("q8_k.ggml", run("quantize_row_q8_K_ref", xkb, len(xk) // 256 * 292, len(xk))))


# ---- K-quant blocks: random bytes, chosen finite f16 scales ------------------
def f16_scales(count):
    s = normal(count - 6, 0.01) + [0.0, -0.02, 6e-8, 1e-5, 65504.0, -1.0]
    return [struct.pack("<e", v) for v in s]        # zero, negative, subnormal, max


def k_blocks(fmt, size, scale_offsets):
    count = 16
    raw = [bytearray(rng.getrandbits(8) for _ in range(size)) for _ in range(count)]
    for off in scale_offsets:
        for blk, s in zip(raw, f16_scales(count)):
            blk[off:off + 2] = s
    data = b"".join(raw)
    records.append((fmt.lower() + ".blocks", data))
    records.append((fmt.lower() + ".ggml.f32",
                    run("dequantize_row_" + fmt, data, count * 256 * 4, count * 256)))


k_blocks("q4_K", 144, [0, 2])    # d, dmin
k_blocks("q5_K", 176, [0, 2])
k_blocks("q6_K", 210, [208])     # d last

# ---- f16 / bf16 rows --------------------------------------------------------
conv = [0.0, -0.0, 1.0, -1.0, 65504.0, 65519.0, 65520.0, 1e6, -1e6, math.inf, -math.inf,
        6e-8, 2.9802322e-8, 2.9802326e-8, 5.9604645e-8, 1e-5, 6.097555e-5, 6.1035156e-5,
        1.0009765625, 1.00048828125, 1.00146484375, 1e-40, -1e-45, 3.4e38, -3.4e38,
        1.00390625, 1.005859375, 1.001953125]
conv += normal(100) + normal(50, 1e-5) + normal(50, 1e4)
for _ in range(100):                                  # random bit patterns, no NaN
    v = struct.unpack("<f", struct.pack("<I", rng.getrandbits(32)))[0]
    if not math.isnan(v):
        conv.append(v)
cb = f32_bytes(conv)
records.append(("conv.input.f32", cb))
records.append(("f16.ggml", run("ggml_fp32_to_fp16_row", cb, 2 * len(conv), len(conv))))
records.append(("bf16.ggml", run("ggml_fp32_to_bf16_row_ref", cb, 2 * len(conv), len(conv))))
# Every 31st finite f16 bit pattern and its f32 value.
hb = [h for h in range(0, 65536, 31) if (h & 0x7C00) != 0x7C00]
hbytes = struct.pack(f"<{len(hb)}H", *hb)
records.append(("f16_all.input", hbytes))
records.append(("f16_all.ggml.f32", run("ggml_fp16_to_fp32_row", hbytes, 4 * len(hb), len(hb))))

with open(out_path, "w") as f:
    f.write("# Test vectors from llama.cpp's ggml (release v0.5.0, commit de3ff81), via\n")
    f.write("# libggml-base.so of npm @node-llama-cpp/linux-x64@3.22.1.\n")
    f.write("# Produced by: kernels/testdata/make_ggml_vectors.sh\n")
    f.write("#   (runs kernels/testdata/make_ggml_vectors.py; see both for the inputs).\n")
    f.write("# ggml functions: quantize_row_q8_0_ref, quantize_row_q4_0_ref,\n")
    f.write("#   quantize_row_q8_K_ref, dequantize_row_q4_K/q5_K/q6_K, ggml_fp32_to_fp16_row,\n")
    f.write("#   ggml_fp32_to_bf16_row_ref, ggml_fp16_to_fp32_row (every 31st finite f16).\n")
    f.write("# Format: records '<name> <n_bytes>' then the bytes in hex, 64 per line\n")
    f.write("#   (little-endian memory images: f32 arrays, ggml blocks, f16/bf16 bits).\n")
    for name, data in records:
        f.write(f"{name} {len(data)}\n")
        for i in range(0, len(data), 64):
            f.write(data[i:i + 64].hex() + "\n")
print(out_path, sum(len(d) for _, d in records), "bytes in", len(records), "records")
