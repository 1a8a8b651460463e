#!/usr/bin/env bash
# Writes the wal_codec seeds: a timeline history file compressed as WAL-G names it
# (.lz4 frame, .zst, .br, .lzma) by the reference command-line tools, and a WAL-E style
# lzop container with one stored block (no LZO compressor is needed for that form).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p wal_codec
t=$(mktemp)
trap 'rm -f "$t"' EXIT
printf '1\t0/3000000\tno recovery target specified\n\n2\t0/50000A8\tat restore point "x"\n' > "$t"
lz4 -q -c "$t" > wal_codec/ok-lz4-history
zstd -q -c "$t" > wal_codec/ok-zst-history
brotli -c "$t" > wal_codec/ok-br-history
lzma -c "$t" > wal_codec/ok-lzma-history
python3 - "$t" > wal_codec/ok-lzo-stored-history <<'PY'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
hdr = struct.pack(">HHHBBIIII", 0x1030, 0x2080, 0x0940, 1, 5, 0x01, 0o100644, 0, 0) + b"\x00"
out = b"\x89LZO\x00\r\n\x1a\n" + hdr + struct.pack(">I", zlib.adler32(hdr))
out += struct.pack(">II", len(data), len(data)) + struct.pack(">I", zlib.adler32(data)) + data
out += struct.pack(">I", 0)
sys.stdout.buffer.write(out)
PY
